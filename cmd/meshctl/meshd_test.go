package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// meshdBinary builds meshd once for the package's tests.
var meshdBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "meshctl-test-meshd-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "meshd")
	out, err := exec.Command("go", "build", "-o", bin, "../meshd").CombinedOutput()
	if err != nil {
		return "", &buildError{err, out}
	}
	return bin, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

// meshdProc is a running meshd: its data directory and the addresses it
// reported.
type meshdProc struct {
	data, xds, http string
}

// startMeshd runs the real meshd binary on loopback with a data directory
// of its own and config (YAML, may be empty), and waits until it reports
// where it serves.
func startMeshd(t *testing.T, config string) meshdProc {
	t.Helper()
	bin, err := meshdBinary()
	if err != nil {
		t.Fatalf("build meshd: %v", err)
	}
	p := meshdProc{data: t.TempDir()}
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg, "--data-dir", p.data, "--xds-address", "127.0.0.1:0",
		"--http-address", "127.0.0.1:0", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	ready := make(chan meshdProc, 1)
	var log bytes.Buffer
	var mu sync.Mutex
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			log.Write(sc.Bytes())
			log.WriteByte('\n')
			mu.Unlock()
			var line struct{ Msg, XDS, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "meshd is serving" {
				ready <- meshdProc{data: p.data, xds: line.XDS, http: line.HTTP}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	select {
	case p = <-ready:
	case <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("meshd exited before serving:\n%s", log.String())
	case <-time.After(15 * time.Second):
		t.Fatal("meshd did not report serving within 15s")
	}
	return p
}

// secureConfig is meshd's production shape on loopback: TLS on both
// listeners, a token needed for everything.
const secureConfig = `tls:
  enabled: true
xds:
  allow_unauthenticated: false
http:
  allow_unauthenticated: false
`

// meshctl runs meshctl in-process against p with args; --server and
// --data-dir come first, so args may override them.
func (p meshdProc) meshctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--server", p.http, "--data-dir", p.data}, args...)
	code = run(t.Context(), all, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (p meshdProc) mustMeshctl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := p.meshctl(t, args...)
	if code != exitOK {
		t.Fatalf("meshctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// issue writes a token of meshd p's keyring to a file and returns its path.
func (p meshdProc) issue(t *testing.T, args ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	p.mustMeshctl(t, append([]string{"token", "issue", "--out", file}, args...)...)
	return file
}
