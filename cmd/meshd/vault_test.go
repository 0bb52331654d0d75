package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets/vault/vaulttest"
)

// TestMeshdServesIdentitiesFromVault runs meshd with secrets.type: vault
// against a real Vault with a PKI engine, and checks that a sidecar's
// identity certificate is Vault's, for its own service, and chains to the
// trust bundle meshd serves.
func TestMeshdServesIdentitiesFromVault(t *testing.T) {
	bin, err := vaulttest.Bin()
	if err != nil {
		t.Fatal(err)
	}
	if bin == "" {
		t.Skip(vaulttest.SkipMessage)
	}
	v := vaulttest.Start(t, bin)
	pki := vaulttest.SetupPKI(t, v.Client(t), vaulttest.PKIOptions{TTL: time.Hour})
	meshdBin, meshctlBin := binaries(t)
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := fmt.Sprintf("secrets:\n  type: vault\n  vault:\n    address: %s\n    mount: %s\n    role: %s\n    token: %s\n",
		v.Addr, pki.Mount, pki.Role, vaulttest.RootToken)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	p := startMeshd(t, meshdBin, data, "--config", cfg)
	server := "http://" + strings.TrimPrefix(p.http, "http://")
	tok := strings.TrimSpace(meshctl(t, meshctlBin, server, "token", "issue", "--service", "payments",
		"--keyring", filepath.Join(data, "tokens.yaml")))

	chain, bundle := fetchIdentity(t, p.xds, tok)
	leaf, rest := pem.Decode(chain)
	cert, err := x509.ParseCertificate(leaf.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != names.SPIFFE("payments") {
		t.Fatalf("identity SAN %v, want %s", cert.URIs, names.SPIFFE("payments"))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("trust bundle holds no certificate")
	}
	inter := x509.NewCertPool()
	inter.AppendCertsFromPEM(rest)
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("Vault's certificate does not chain to the served trust bundle: %v", err)
	}
	if strings.Contains(p.logged(), "PRIVATE KEY") {
		t.Fatal("meshd logged a private key")
	}
}
