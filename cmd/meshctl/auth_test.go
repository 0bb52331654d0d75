package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/token"
)

// TestAgainstSecureMeshd: against a real meshd serving TLS and requiring
// tokens, meshctl trusts the local embedded CA by itself (or --ca-file),
// sends the token of --token-file or $MESHCTL_TOKEN, shows the server's
// 401 and 403 as it wrote them, and says what to pass when the CA is not
// the right one.
func TestAgainstSecureMeshd(t *testing.T) {
	p := startMeshd(t, secureConfig)
	if !strings.HasPrefix(p.http, "https://") {
		t.Fatalf("meshd serves %s, want https", p.http)
	}

	// No token: the server's 401, verbatim.
	code, _, stderr := p.meshctl(t, "vip", "list")
	if code != exitFailure || !strings.Contains(stderr, "unauthenticated: GET /v1/vips needs a token") {
		t.Fatalf("without a token: exit %d, stderr %q", code, stderr)
	}

	ops := p.issue(t, "--role", "operator", "--name", "alice")
	if fi, err := os.Stat(ops); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v, mode %v; want 0600", ops, err, fi.Mode())
	}
	// The CA is found in --data-dir: no --ca-file needed on this machine.
	out := p.mustMeshctl(t, "--token-file", ops, "vip", "apply", "-f", writeFile(t, paymentsYAML))
	if !strings.Contains(out, "vip/payments created") {
		t.Fatalf("apply: %s", out)
	}
	// Named explicitly, the same CA works from anywhere.
	ca := filepath.Join(p.data, "ca", "ca.crt")
	p.mustMeshctl(t, "--data-dir", t.TempDir(), "--ca-file", ca, "--token-file", ops, "vip", "get", "payments")

	// Without the CA: what to pass.
	code, _, stderr = p.meshctl(t, "--data-dir", t.TempDir(), "--token-file", ops, "vip", "list")
	if code != exitFailure || !strings.Contains(stderr, "not signed by a CA meshctl trusts: pass --ca-file") {
		t.Errorf("without the CA: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = p.meshctl(t, "--ca-file", otherCAFile(t), "--token-file", ops, "vip", "list")
	if code != exitFailure || !strings.Contains(stderr, "not signed by --ca-file") {
		t.Errorf("with another CA: exit %d, stderr %q", code, stderr)
	}
	// Plain HTTP to the TLS listener: use https.
	code, _, stderr = p.meshctl(t, "--server", strings.Replace(p.http, "https://", "http://", 1), "--token-file", ops, "vip", "list")
	if code != exitFailure || !strings.Contains(stderr, "meshd serves TLS: use --server https://") {
		t.Errorf("plain http: exit %d, stderr %q", code, stderr)
	}

	// A service token from the environment may register its own VIP's
	// instances, and only those: the server's 403, verbatim.
	orders := p.issue(t, "--service", "orders")
	tok, err := token.ReadFile(orders)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(tokenEnv, tok)
	p.mustMeshctl(t, "instance", "register", "orders", "--id", "o1", "--address", "10.0.0.9", "--port", "8080")
	code, _, stderr = p.meshctl(t, "instance", "register", "payments", "--id", "p1", "--address", "10.0.0.1", "--port", "8080")
	if code != exitFailure || !strings.Contains(stderr, `forbidden: service orders may only act on instances of VIP "orders", not "payments"`) {
		t.Errorf("another VIP's instance: exit %d, stderr %q", code, stderr)
	}
	// --token-file wins over the environment.
	p.mustMeshctl(t, "--token-file", ops, "instance", "register", "payments", "--id", "p1", "--address", "10.0.0.1", "--port", "8080")
}

// TestTokenIssueOut: --out writes the token alone with mode 0600, says so,
// and refuses to overwrite a file others may read.
func TestTokenIssueOut(t *testing.T) {
	dir := t.TempDir()
	kr, _, err := token.LoadOrCreate(filepath.Join(dir, "tokens.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "alice.token")
	code, out, stderr := runMeshctl(t, "--data-dir", dir, "token", "issue", "--role", "operator", "--name", "alice", "--ttl", "8h", "--out", file)
	if code != exitOK || !strings.Contains(out, "operator token for alice written to "+file+" (mode 0600)") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	tok, err := token.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := kr.Verify(tok); err != nil || c.Role != token.RoleOperator || c.Subject != "alice" {
		t.Fatalf("written token: %+v, %v", c, err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Rewriting a 0600 file is fine; a world-readable one is refused.
	if code, _, stderr := runMeshctl(t, "--data-dir", dir, "token", "issue", "--service", "payments", "--out", file); code != exitOK {
		t.Fatalf("rewrite: exit %d: %s", code, stderr)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runMeshctl(t, "--data-dir", dir, "token", "issue", "--service", "payments", "--out", file)
	if code != exitFailure || !strings.Contains(stderr, "readable by others; remove it or chmod 600 it first") {
		t.Fatalf("world-readable --out: exit %d, stderr %q", code, stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--role", "admin", "--name", "x"}, `role "admin" is not a role; use service or operator`},
		{[]string{"--role", "operator"}, "--name is required with --role operator"},
		{[]string{"--role", "operator", "--service", "payments"}, "an operator token takes --name NAME"},
		{[]string{"--name", "alice"}, "a service token takes --service NAME"},
	} {
		code, _, stderr := runMeshctl(t, append([]string{"--data-dir", dir, "token", "issue"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args, code, stderr, tc.want)
		}
	}
}

// runMeshctl runs meshctl in-process with args.
func runMeshctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(t.Context(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.yaml")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// otherCAFile is the certificate of an embedded CA that issued nothing
// meshd has.
func otherCAFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := embedded.Open(dir, embedded.Options{}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, embedded.CertFile)
}
