package main

import (
	"crypto/x509"
	"encoding/pem"
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
	p, token := meshdOnVault(t, v.Addr, vaulttest.RootToken, pki)
	tok := token("payments")

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
