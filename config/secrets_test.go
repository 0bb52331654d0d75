package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// decodeSecrets decodes a secrets section strictly over the defaults, as
// Decode does for the whole file.
func decodeSecrets(t *testing.T, yml string) (Secrets, error) {
	t.Helper()
	s := DefaultSecrets()
	j, err := yaml.YAMLToJSONStrict([]byte(yml))
	if err != nil {
		return s, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return s, dec.Decode(&s)
}

func validVault() Secrets {
	s := DefaultSecrets()
	s.Type = "vault"
	s.Vault.Role = "mesh"
	s.Vault.TokenFile = "/run/secrets/vault-token"
	return s
}

func TestSecretsDefaultsAreValid(t *testing.T) {
	d := DefaultSecrets()
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	if d.Type != "embedded" || d.Embedded.Lifetime.D() != 24*time.Hour || d.RenewAt != 0.5 {
		t.Fatalf("defaults changed: %+v", d)
	}
	if err := validVault().validate(); err != nil {
		t.Fatalf("a minimal vault section is invalid: %v", err)
	}
}

func TestSecretsDecodeOverDefaults(t *testing.T) {
	s, err := decodeSecrets(t, `
type: vault
vault:
  address: https://vault.example:8200
  role: mesh
  ttl: 1h
  auth: approle
  approle:
    role_id: r-1
    secret_id_file: /run/secrets/secret-id
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
	v := s.Vault
	if v.Mount != "pki" || v.AppRole.Mount != "approle" || v.Timeout.D() != 10*time.Second {
		t.Fatalf("defaults lost: %+v", v)
	}
	if v.TTL.D() != time.Hour || v.AppRole.RoleID != "r-1" || s.Embedded.Lifetime.D() != 24*time.Hour {
		t.Fatalf("file not applied: %+v", s)
	}
	if _, err := decodeSecrets(t, "vault:\n  rol: mesh\n"); err == nil || !strings.Contains(err.Error(), `unknown field "rol"`) {
		t.Fatalf("unknown field: error %v", err)
	}
}

func TestSecretsValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Secrets)
		field string
	}{
		{"type", func(s *Secrets) { s.Type = "acme" }, "secrets.type"},
		{"renew at", func(s *Secrets) { s.RenewAt = 1 }, "secrets.renew_at"},
		{"near expiry", func(s *Secrets) { s.NearExpiry = -1 }, "secrets.near_expiry"},
		{"min backoff", func(s *Secrets) { s.MinBackoff = 0 }, "secrets.min_backoff"},
		{"max backoff", func(s *Secrets) {
			s.MaxBackoff = registry.Duration(time.Millisecond * 100)
			s.MinBackoff = registry.Duration(time.Second)
		}, "secrets.max_backoff"},
		{"lifetime", func(s *Secrets) { s.Embedded.Lifetime = registry.Duration(time.Second) }, "secrets.embedded.lifetime"},
		{"address", func(s *Secrets) { s.Vault.Address = "vault:8200" }, "secrets.vault.address"},
		{"address port", func(s *Secrets) { s.Vault.Address = "https://vault.example" }, "secrets.vault.address"},
		{"mount", func(s *Secrets) { s.Vault.Mount = "/pki/" }, "secrets.vault.mount"},
		{"role", func(s *Secrets) { s.Vault.Role = "" }, "secrets.vault.role"},
		{"role path", func(s *Secrets) { s.Vault.Role = "a/b" }, "secrets.vault.role"},
		{"ttl", func(s *Secrets) { s.Vault.TTL = registry.Duration(time.Millisecond) }, "secrets.vault.ttl"},
		{"timeout", func(s *Secrets) { s.Vault.Timeout = 0 }, "secrets.vault.timeout"},
		{"auth", func(s *Secrets) { s.Vault.Auth = "kerberos" }, "secrets.vault.auth"},
		{"no token", func(s *Secrets) { s.Vault.TokenFile = "" }, "secrets.vault.token_file"},
		{"two tokens", func(s *Secrets) { s.Vault.Token = "t" }, "secrets.vault.token_file"},
		{"role id", func(s *Secrets) { s.Vault.Auth = "approle" }, "secrets.vault.approle.role_id"},
		{"approle mount", func(s *Secrets) {
			s.Vault.Auth, s.Vault.AppRole.RoleID, s.Vault.AppRole.Mount = "approle", "r", ""
		}, "secrets.vault.approle.mount"},
		{"two secret ids", func(s *Secrets) {
			s.Vault.Auth, s.Vault.AppRole.RoleID = "approle", "r"
			s.Vault.AppRole.SecretID, s.Vault.AppRole.SecretIDFile = "s", "/f"
		}, "secrets.vault.approle.secret_id_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validVault()
			tt.edit(&s)
			err := s.validate()
			if err == nil || !strings.Contains(err.Error(), tt.field+":") {
				t.Fatalf("validate error = %v, want it to name %s", err, tt.field)
			}
		})
	}
}

func TestSecretsVaultNotValidatedWhenEmbedded(t *testing.T) {
	s := DefaultSecrets() // vault.role is empty, but vault is not selected
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsPrintRedacted(t *testing.T) {
	s := validVault()
	s.Vault.TokenFile, s.Vault.Token = "", "hvs.secret-token-value"
	s.Vault.AppRole.SecretID = "secret-id-value"
	b, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"hvs.secret-token-value", "secret-id-value"} {
		if strings.Contains(string(b), leak) {
			t.Fatalf("printed config shows %q:\n%s", leak, b)
		}
	}
	if !strings.Contains(string(b), Redacted) {
		t.Fatalf("printed config does not say %s:\n%s", Redacted, b)
	}
}

func TestSecretsResolveFromFiles(t *testing.T) {
	dir := t.TempDir()
	tokenFile, idFile := filepath.Join(dir, "token"), filepath.Join(dir, "secret-id")
	if err := os.WriteFile(tokenFile, []byte("hvs.abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idFile, []byte(" sid \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := Vault{TokenFile: tokenFile, AppRole: AppRole{SecretIDFile: idFile}}
	if tok, err := v.ResolveToken(); err != nil || tok != "hvs.abc" {
		t.Fatalf("ResolveToken = %q, %v", tok, err)
	}
	if sid, err := v.AppRole.ResolveSecretID(); err != nil || sid != "sid" {
		t.Fatalf("ResolveSecretID = %q, %v", sid, err)
	}
	v.TokenFile = filepath.Join(dir, "missing")
	if _, err := v.ResolveToken(); err == nil || !strings.Contains(err.Error(), "secrets.vault.token_file") {
		t.Fatalf("missing token file: error %v", err)
	}
	inline := Vault{Token: "inline"}
	if tok, err := inline.ResolveToken(); err != nil || tok != "inline" {
		t.Fatalf("inline token = %q, %v", tok, err)
	}
}
