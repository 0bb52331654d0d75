//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/await"
)

// startCompose runs docker-compose.yaml (building the xspace-mesh image
// first) and waits until the worker reaches the api through the mesh. The
// stack is removed afterwards, unless E2E_KEEP=1; its logs are shown if a
// test failed.
func startCompose(t *testing.T) *cluster {
	t.Helper()
	compose := func(timeout time.Duration, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return exec.CommandContext(ctx, "docker", append([]string{"compose", "-f", "docker-compose.yaml"}, args...)...).CombinedOutput()
	}
	t.Log("e2e: docker compose up --build (the first build of the image takes a few minutes)")
	if out, err := compose(20*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("docker compose up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose(time.Minute, "logs", "--no-color", "--tail", "100")
			t.Logf("docker compose logs:\n%s", out)
		}
		if os.Getenv("E2E_KEEP") == "1" {
			t.Log("e2e: E2E_KEEP=1, leaving the stack up; remove it with: docker compose -f e2e/docker-compose.yaml down -v")
			return
		}
		if out, err := compose(5*time.Minute, "down", "-v"); err != nil {
			t.Logf("docker compose down: %v\n%s", err, out)
		}
	})
	// The CA setup.sh fetched from Vault, and the keyring meshd created,
	// copied out of the containers: the tests act as an operator.
	dir := t.TempDir()
	copyOut := func(service, path string) string {
		out, err := exec.Command("docker", "compose", "-f", "docker-compose.yaml", "exec", "-T", service, "cat", path).Output()
		if err != nil {
			t.Fatalf("docker compose exec %s cat %s: %v", service, path, err)
		}
		file := filepath.Join(dir, filepath.Base(path))
		writeFile(t, file, string(out))
		return file
	}
	c := &cluster{
		meshd:  "https://127.0.0.1:18080",
		caFile: copyOut("api-1", "/bootstrap/ca.crt"),
		worker: "http://127.0.0.1:18090",
		apis:   map[string]string{"api-1": "http://127.0.0.1:18081", "api-2": "http://127.0.0.1:18082"},
	}
	c.operator = operatorToken(t, copyOut("meshd", "/data/tokens.yaml"))
	c.restartMeshd = func(t *testing.T) {
		if out, err := compose(5*time.Minute, "restart", "meshd"); err != nil {
			t.Fatalf("docker compose restart meshd: %v\n%s", err, out)
		}
		waitReady(t, "meshd", 2*time.Minute, c.meshdReady)
	}
	waitReady(t, "meshd", 5*time.Minute, c.meshdReady)
	for _, url := range []string{c.worker + "/healthz", c.apis["api-1"] + "/healthz", c.apis["api-2"] + "/healthz"} {
		waitReady(t, url, 5*time.Minute, httpOK(url))
	}
	return c
}

// waitReady polls check until it passes.
func waitReady(t *testing.T, what string, timeout time.Duration, check func(context.Context) error) {
	t.Helper()
	await.Within(t, timeout, what+" to be ready", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return check(ctx)
	})
}
