//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/internal/testproc"
)

// startProcesses runs the mesh as processes on loopback: meshd (embedded
// registry and CA, TLS on both listeners, every stream and request
// authenticated), two api instances and a worker, and one Envoy per instance from envoy, each with a bootstrap
// written by meshctl. Ports are free ones picked at start.
func startProcesses(t *testing.T, envoy string) *cluster {
	t.Helper()
	if _, err := os.Stat(envoy); err != nil {
		t.Fatalf("ENVOY_BIN: %v", err)
	}
	out, err := exec.Command(envoy, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("ENVOY_BIN %s --version: %v\n%s", envoy, err, out)
	}
	version, err := envoyVersion(string(out))
	switch {
	case err != nil:
		t.Fatalf("ENVOY_BIN %s: %v", envoy, err)
	case olderThan(version, bootstrap.MinEnvoyVersion):
		t.Fatalf("ENVOY_BIN is Envoy %s; meshd needs Envoy >= %s (on-demand CDS over ADS of every name; see bootstrap.MinEnvoyVersion)", version, bootstrap.MinEnvoyVersion)
	}
	pinned, _ := pinnedEnvoy(t)
	t.Logf("e2e: Envoy %s from ENVOY_BIN (the compose suite pins %s)", version, pinned)
	dir := t.TempDir()
	bin := buildBinaries(t, dir)
	port := freePorts(t, 14)
	xds, httpAddr := "127.0.0.1:"+port(), "127.0.0.1:"+port()
	meshdURL := "https://" + httpAddr

	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "meshd.yaml")
	writeFile(t, cfg, fmt.Sprintf("data_dir: %s\ntls:\n  enabled: true\nxds:\n  address: %s\n  allow_unauthenticated: false\n"+
		"http:\n  address: %s\n  allow_unauthenticated: false\n", data, xds, httpAddr))
	c := &cluster{meshd: meshdURL, caFile: filepath.Join(data, "ca", "ca.crt"), apis: map[string]string{}}
	meshd := testproc.New(t, "meshd", dir)
	startMeshd := func(t *testing.T) {
		meshd.Start(t, exec.Command(filepath.Join(bin, "meshd"), "--config", cfg), 30*time.Second, c.meshdReady)
	}
	startMeshd(t)
	c.operator = operatorToken(t, filepath.Join(data, "tokens.yaml"))
	c.restartMeshd = func(t *testing.T) {
		meshd.Stop(t)
		startMeshd(t)
	}

	meshctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(filepath.Join(bin, "meshctl"), args...).CombinedOutput(); err != nil {
			t.Fatalf("meshctl %v: %v\n%s", args, err, out)
		}
	}
	tokens := map[string]string{}
	for _, svc := range []string{"api", "worker"} {
		tokens[svc] = filepath.Join(dir, svc+".token")
		out, err := exec.Command(filepath.Join(bin, "meshctl"), "token", "issue", "--service", svc, "--keyring", filepath.Join(data, "tokens.yaml")).Output()
		if err != nil {
			t.Fatalf("meshctl token issue --service %s: %v", svc, err)
		}
		writeFile(t, tokens[svc], string(out))
	}

	sidecar := func(node, svc string, extra ...string) (outbound string) {
		outbound, admin := port(), port()
		boot := filepath.Join(dir, node+".yaml")
		meshctl(append([]string{
			"bootstrap", "--service", svc, "--instance", node, "--xds", xds,
			"--outbound-port", outbound, "--admin-port", admin, "--token-file", tokens[svc], "--xds-ca-file", c.caFile,
			"--keyring", filepath.Join(data, "tokens.yaml"), "--out", boot,
		}, extra...)...)
		p := testproc.New(t, node+"-envoy", dir)
		p.Start(t, exec.Command(envoy, "-c", boot, "--disable-hot-restart", "--log-level", "info"), time.Minute,
			httpOK("http://127.0.0.1:"+admin+"/ready"))
		return outbound
	}
	for _, name := range []string{"api-1", "api-2"} {
		app, inbound := port(), port()
		c.apis[name] = "http://127.0.0.1:" + app
		p := testproc.New(t, name, dir)
		p.Start(t, exec.Command(filepath.Join(bin, "demo-api"), "--listen", "127.0.0.1:"+app, "--name", name,
			"--meshd", meshdURL, "--ca-file", c.caFile, "--token-file", tokens["api"],
			"--address", "127.0.0.1", "--secure-port", inbound), 30*time.Second, httpOK(c.apis[name]+"/healthz"))
		sidecar(name, "api", "--inbound-port", inbound, "--app-port", app)
	}
	outbound := sidecar("worker-1", "worker")
	workerPort := port()
	c.worker = "http://127.0.0.1:" + workerPort
	testproc.New(t, "worker", dir).Start(t, exec.Command(filepath.Join(bin, "demo-worker"), "--listen", "127.0.0.1:"+workerPort,
		"--proxy", "127.0.0.1:"+outbound, "--name", "worker-1"), 30*time.Second, httpOK(c.worker+"/healthz"))
	return c
}

// buildBinaries builds meshd, meshctl and the demo services into dir/bin.
func buildBinaries(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	for name, pkg := range map[string]string{
		"meshd": "../cmd/meshd", "meshctl": "../cmd/meshctl", "demo-api": "./demo/api", "demo-worker": "./demo/worker",
	} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return bin
}

// freePorts returns a function handing out n distinct ports that were
// free on 127.0.0.1 when asked.
func freePorts(t *testing.T, n int) func() string {
	t.Helper()
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return func() string {
		if len(ports) == 0 {
			t.Fatal("e2e: out of free ports; raise freePorts' count")
		}
		p := ports[0]
		ports = ports[1:]
		return p
	}
}

// httpOK is a readiness check: GET url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error { return getOK(ctx, http.DefaultClient, url) }
}

// getOK is nil when GET url with hc answers 200.
func getOK(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
