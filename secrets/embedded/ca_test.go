package embedded

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string, opts Options) *CA {
	t.Helper()
	ca, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func leafOf(t *testing.T, c secrets.Certificate) *x509.Certificate {
	t.Helper()
	certs, err := secrets.ParsePEMCertificates(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestIssue(t *testing.T) {
	ca := open(t, t.TempDir(), Options{Now: func() time.Time { return fixedNow }})
	c, err := ca.Issue(context.Background(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, c)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != names.SPIFFE("payments") {
		t.Fatalf("URI SANs %v; want only %s", leaf.URIs, names.SPIFFE("payments"))
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.CommonName != "" {
		t.Fatalf("leaf carries other names: CN %q, DNS %v, IP %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	if !sanCritical(leaf) {
		t.Fatal("the SAN extension of a subject-less certificate must be critical")
	}
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("leaf key is %T; want ECDSA P-256", leaf.PublicKey)
	}
	wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if !slices.Equal(leaf.ExtKeyUsage, wantEKU) || leaf.IsCA {
		t.Fatalf("EKU %v (CA %v); want server and client auth, not a CA", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if !leaf.NotBefore.Equal(fixedNow.Add(-Backdate)) || !leaf.NotAfter.Equal(fixedNow.Add(DefaultLifetime)) {
		t.Fatalf("validity %s to %s; want a minute before now to 24h after", leaf.NotBefore, leaf.NotAfter)
	}
	if c.Service != "payments" || !c.NotAfter.Equal(leaf.NotAfter) || c.Serial != secrets.FormatSerial(leaf.SerialNumber) {
		t.Fatalf("certificate fields %v do not match the leaf", c)
	}
	if _, err := c.TLSCertificate(); err != nil {
		t.Fatalf("key does not pair with the certificate: %v", err)
	}
	roots := x509.NewCertPool()
	bundle, err := ca.TrustBundle(context.Background())
	if err != nil || !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("trust bundle: %v", err)
	}
	for _, usage := range wantEKU {
		opts := x509.VerifyOptions{Roots: roots, CurrentTime: fixedNow, KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Fatalf("leaf does not verify against the trust bundle for %v: %v", usage, err)
		}
	}
	other, err := ca.Issue(context.Background(), "payments")
	if err != nil || other.Serial == c.Serial || string(other.KeyPEM) == string(c.KeyPEM) {
		t.Fatalf("a second issue must have a new serial and key (err %v)", err)
	}
}

// sanCritical reports whether the leaf's subjectAltName extension is critical.
func sanCritical(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			return e.Critical
		}
	}
	return false
}

// TestIssueServing: meshd's serving certificate names its hosts (DNS and IP
// SANs) besides the control plane's identity, and chains to the root.
func TestIssueServing(t *testing.T) {
	ca := open(t, t.TempDir(), Options{})
	c, err := ca.IssueServing(t.Context(), []string{"meshd.internal", "10.0.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, c)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	for _, host := range []string{"meshd.internal", "10.0.0.5"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("verify as %s: %v", host, err)
		}
	}
	if c.Service != names.ControlPlane {
		t.Errorf("service %q, want %q", c.Service, names.ControlPlane)
	}
	if _, err := ca.IssueServing(t.Context(), nil); err == nil {
		t.Error("a serving certificate without hosts was issued")
	}
}

func TestIssueRefusesInvalidService(t *testing.T) {
	ca := open(t, t.TempDir(), Options{})
	for _, svc := range []string{"", "Payments", "a/b", "x.svip"} {
		if _, err := ca.Issue(context.Background(), svc); err == nil {
			t.Errorf("Issue(%q) succeeded", svc)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ca.Issue(ctx, "payments"); err == nil {
		t.Error("Issue with a cancelled context succeeded")
	}
}

func TestLifetime(t *testing.T) {
	for _, life := range []time.Duration{90 * time.Minute, 3 * time.Second} {
		ca := open(t, t.TempDir(), Options{Lifetime: life, Now: func() time.Time { return fixedNow }})
		c, err := ca.Issue(context.Background(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.NotAfter.Sub(fixedNow); got != life {
			t.Errorf("lifetime %s: certificate valid %s after issue", life, got)
		}
	}
	if _, err := Open(t.TempDir(), Options{Lifetime: -time.Second}); err == nil {
		t.Error("a negative lifetime was accepted")
	}
}

func TestRootFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca := open(t, dir, Options{})
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %#o; want 0600", KeyFile, fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	root := ca.Root()
	if !root.IsCA || root.Subject.CommonName != RootCommonName || root.NotAfter.Sub(root.NotBefore) < RootLifetime {
		t.Fatalf("root: CA %v, subject %q, valid %s to %s", root.IsCA, root.Subject, root.NotBefore, root.NotAfter)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("CA directory holds %d files; want ca.crt and ca.key only", len(entries))
	}
}

func TestReopenReusesRoot(t *testing.T) {
	dir := t.TempDir()
	first := open(t, dir, Options{})
	c, err := first.Issue(context.Background(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	second := open(t, dir, Options{})
	if !second.Root().Equal(first.Root()) {
		t.Fatal("reopening the directory created a new root")
	}
	roots := x509.NewCertPool()
	bundle, _ := second.TrustBundle(context.Background())
	roots.AppendCertsFromPEM(bundle)
	if _, err := leafOf(t, c).Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("a certificate issued before reopening does not verify after: %v", err)
	}
}

func TestRefusesWideKeyMode(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	keyPath := filepath.Join(dir, KeyFile)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), keyPath) {
			t.Fatalf("mode %#o: Open error %v; want it to name the file and say chmod 600", mode, err)
		}
	}
	if err := os.Chmod(keyPath, 0o400); err != nil {
		t.Fatal(err)
	}
	open(t, dir, Options{}) // owner read-only is fine
}

func TestRootFileErrors(t *testing.T) {
	t.Run("key missing", func(t *testing.T) {
		dir := t.TempDir()
		open(t, dir, Options{})
		if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "restore the key") {
			t.Fatalf("Open error %v; want it to say the key is missing", err)
		}
	})
	t.Run("key of another root", func(t *testing.T) {
		a, b := t.TempDir(), t.TempDir()
		open(t, a, Options{})
		open(t, b, Options{})
		key, err := os.ReadFile(filepath.Join(b, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(a, KeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(a, Options{}); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("Open error %v; want a key mismatch", err)
		}
	})
	t.Run("key without certificate is replaced", func(t *testing.T) {
		dir := t.TempDir()
		first := open(t, dir, Options{})
		if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
			t.Fatal(err)
		}
		second := open(t, dir, Options{})
		if second.Root().Equal(first.Root()) {
			t.Fatal("a root without its certificate file was reused")
		}
	})
}

// TestRotation: after ca.crt moves to previous.crt, the new root and the
// old one are both in the trust bundle, so certificates of either verify
// until the old root is removed; previous.crt holding a leaf is refused.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	old := open(t, dir, Options{})
	oldLeaf, err := old.Issue(t.Context(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, CertFile), filepath.Join(dir, PreviousFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	rotated := open(t, dir, Options{})
	if rotated.Root().Equal(old.Root()) {
		t.Fatal("no new root after ca.crt was moved aside")
	}
	newLeaf, err := rotated.Issue(t.Context(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := rotated.TrustBundle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := secrets.ParsePEMCertificates(bundle)
	if err != nil || len(roots) != 2 || !roots[0].Equal(rotated.Root()) || !roots[1].Equal(old.Root()) {
		t.Fatalf("trust bundle = %d certificates, %v; want the new root, then the old", len(roots), err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for name, c := range map[string]secrets.Certificate{"old": oldLeaf, "new": newLeaf} {
		if _, err := leafOf(t, c).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("the %s root's leaf does not verify against the bundle: %v", name, err)
		}
	}

	if err := os.WriteFile(filepath.Join(dir, PreviousFile), oldLeaf.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Fatalf("Open with a leaf in %s: %v; want a refusal", PreviousFile, err)
	}
}
