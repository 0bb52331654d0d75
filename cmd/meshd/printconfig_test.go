package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/config"
)

// TestPrintConfigIsComplete: --print-config shows every field, the
// credential fields the errors mention included, with secrets redacted
// and the paths that default into data_dir resolved; /debug/config shows
// the same keyring path meshd uses.
func TestPrintConfigIsComplete(t *testing.T) {
	meshdBin, _ := binaries(t)
	cfgFile := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := "registry:\n  consul:\n    token: s3cret-acl\nsecrets:\n  vault:\n    approle:\n      secret_id: s3cret-id\n"
	if err := os.WriteFile(cfgFile, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(meshdBin, "--config", cfgFile, "--data-dir", "/var/lib/xspace", "--print-config").Output()
	if err != nil {
		t.Fatal(err)
	}
	printed := string(out)
	for _, want := range []string{
		"token_keyring: /var/lib/xspace/tokens.yaml", "dir: /var/lib/xspace/ca", "token_file: \"\"", "datacenter: \"\"",
		"secret_id_file: \"\"", "role_id: \"\"", "ca_cert: \"\"", "server_role: \"\"", "token: " + config.Redacted, "secret_id: " + config.Redacted,
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, printed)
		}
	}
	if strings.Contains(printed, "s3cret") {
		t.Errorf("--print-config shows a secret:\n%s", printed)
	}

	data := t.TempDir()
	p := startMeshd(t, meshdBin, data)
	resp, err := http.Get(p.http + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var shown config.Config
	if err := json.Unmarshal(b, &shown); err != nil {
		t.Fatalf("/debug/config: %v\n%s", err, b)
	}
	if shown.XDS.TokenKeyring != filepath.Join(data, "tokens.yaml") {
		t.Errorf("/debug/config shows the keyring at %q, meshd uses %s", shown.XDS.TokenKeyring, filepath.Join(data, "tokens.yaml"))
	}
	if _, err := os.Stat(shown.XDS.TokenKeyring); err != nil {
		t.Errorf("the keyring /debug/config names: %v", err)
	}
}
