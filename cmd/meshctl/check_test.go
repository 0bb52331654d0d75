package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck: against a healthy secure meshd, with an operator token, every
// check passes and the exit code is 0; a keyring others may read, a
// missing token and an unreachable meshd each fail it with exit code 1 and
// say what to do.
func TestCheck(t *testing.T) {
	p := startMeshd(t, secureConfig)
	ops := p.issue(t, "--role", "operator", "--name", "alice")
	out := p.mustMeshctl(t, "--token-file", ops, "check")
	for _, want := range []string{"reachable", "ready/registry", "ready/secrets", "access", "xds", "serving-tls", "local-ca", "keyring"} {
		if !strings.Contains(out, "\n"+want+" ") || strings.Contains(out, "FAIL") {
			t.Errorf("check lacks %q or failed:\n%s", want, out)
		}
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(p.mustMeshctl(t, "--token-file", ops, "check", "-o", "json")), &rep); err != nil || !rep.OK {
		t.Fatalf("check -o json: %+v, %v", rep, err)
	}
	statuses := map[string]string{}
	for _, r := range rep.Results {
		statuses[r.Check] = r.Status
	}
	for _, c := range []string{"xds", "serving-tls", "local-ca", "keyring", "access", "ready"} {
		if statuses[c] != checkOK {
			t.Errorf("%s: %q, want ok (%+v)", c, statuses[c], rep.Results)
		}
	}

	keyring := filepath.Join(p.data, "tokens.yaml")
	if err := os.Chmod(keyring, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := p.meshctl(t, "--token-file", ops, "check")
	if code != exitFailure || !strings.Contains(out, "others may read the keys; chmod 600 "+keyring) {
		t.Errorf("world-readable keyring: exit %d\n%s", code, out)
	}
	if err := os.Chmod(keyring, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = p.meshctl(t, "check")
	if code != exitFailure || !strings.Contains(out, "access") || !strings.Contains(out, "needs a token") {
		t.Errorf("without a token: exit %d\n%s", code, out)
	}
	code, out, _ = p.meshctl(t, "--server", "http://127.0.0.1:1", "check")
	if code != exitFailure || !strings.Contains(out, "cannot reach http://127.0.0.1:1") {
		t.Errorf("unreachable: exit %d\n%s", code, out)
	}
}
