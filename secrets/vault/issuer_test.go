package vault_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/vault"
	"github.com/prisma-systems/xspace-mesh/secrets/vault/vaulttest"
)

func TestIssueFromIntermediate(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{Intermediate: true})
	iss := e.issuer(vault.Options{TTL: 90 * time.Second})
	ctx := context.Background()
	c, err := iss.Issue(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := secrets.ParsePEMCertificates(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != names.SPIFFE("payments") {
		t.Fatalf("URI SANs %v; want only %s", leaf.URIs, names.SPIFFE("payments"))
	}
	if leaf.Subject.CommonName != "" || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
		t.Fatalf("leaf has other names: CN %q, DNS %v, IP %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("EKU %v; want server and client auth", leaf.ExtKeyUsage)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("leaf key %T; want ECDSA (the role's key type)", leaf.PublicKey)
	}
	if d := time.Until(c.NotAfter); d < 80*time.Second || d > 91*time.Second {
		t.Fatalf("certificate expires in %s; want the requested 90s", d)
	}
	if len(chain) != 2 || chain[1].Subject.CommonName != "xspace test intermediate" {
		t.Fatalf("CertPEM holds %d certificates; want the leaf and the intermediate", len(chain))
	}
	if c.Serial != secrets.FormatSerial(leaf.SerialNumber) {
		t.Fatalf("serial %s does not match the leaf's", c.Serial)
	}

	bundle, err := iss.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := secrets.ParsePEMCertificates(bundle)
	if err != nil || len(certs) != 2 {
		t.Fatalf("trust bundle: %d certificates, %v; want the intermediate and the root", len(certs), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(certs[len(certs)-1]) // the root alone verifies the chain served to peers
	inter := x509.NewCertPool()
	inter.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("leaf does not verify up to the root: %v", err)
	}

	// Two services' certificates authenticate each other over mutual TLS.
	b, err := iss.Issue(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, c, b, bundle, names.SPIFFE("payments"), names.SPIFFE("orders")); err != nil {
		t.Fatalf("payments to orders: %v", err)
	}
	if err := handshake(t, c, b, bundle, names.SPIFFE("payments"), names.SPIFFE("billing")); !errors.Is(err, secrets.ErrPeerIdentity) {
		t.Fatalf("payments expecting billing behind orders: error %v; want ErrPeerIdentity", err)
	}
	if got := e.metric("xspace_secrets_vault_requests_total", "operation", "issue", "result", "success"); got != 2 {
		t.Fatalf("issue requests = %v; want 2", got)
	}
}

func TestWrongRoleCachesNothing(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{})
	iss := e.issuer(vault.Options{Role: "nope"})
	_, err := iss.Issue(context.Background(), "payments")
	if !errors.Is(err, vault.ErrUnknownRole) || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "pki/issue/nope") {
		t.Fatalf("issue with a wrong role: %v; want ErrUnknownRole naming the role and path", err)
	}
	t.Logf("wrong role: %v", err)
	m, _ := manager(t, iss, secrets.ManagerOptions{})
	if _, err := m.Acquire(context.Background(), "payments"); !errors.Is(err, vault.ErrUnknownRole) {
		t.Fatalf("Acquire: %v", err)
	}
	// Nothing served: the identity is held, and retried, without a certificate.
	if _, ok := m.Current("payments"); ok || certificates(m) != 0 {
		t.Fatal("a failed issue left a certificate served")
	}
	if got := e.metric("xspace_secrets_vault_requests_total", "operation", "issue", "result", "failure"); got != 2 {
		t.Fatalf("failed issue requests = %v; want 2", got)
	}
}

func TestDeniedPolicyCachesNothing(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{})
	c := e.srv.Client(t)
	vaulttest.WritePolicy(t, c, "ca-only", `path "pki/cert/ca_chain" { capabilities = ["read"] }`)
	tok := e.token(&api.TokenCreateRequest{Policies: []string{"ca-only"}, NoDefaultPolicy: true})
	iss := e.issuer(vault.Options{Token: tok})
	_, err := iss.Issue(context.Background(), "payments")
	if !errors.Is(err, vault.ErrPermissionDenied) || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "pki/issue/mesh") {
		t.Fatalf("issue without the policy: %v; want ErrPermissionDenied with Vault's message and the path", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("the error spans lines: %q", err)
	}
	t.Logf("denied: %v", err)
	m, _ := manager(t, iss, secrets.ManagerOptions{})
	if _, err := m.Acquire(context.Background(), "payments"); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Fatalf("Acquire: %v", err)
	}
	// Nothing served: the identity is held, and retried, without a certificate.
	if _, ok := m.Current("payments"); ok || certificates(m) != 0 {
		t.Fatal("a denied issue left a certificate served")
	}
	if _, err := m.TrustBundle(context.Background()); err != nil {
		t.Fatalf("the policy allows reading the CA chain: %v", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{})
	c := e.srv.Client(t)
	vaulttest.WritePolicy(t, c, "issue", vaulttest.IssuePolicy(e.pki.Mount, e.pki.Role))
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/approle/role/meshd", map[string]any{
		"token_policies": "issue", "token_ttl": "3s", "token_max_ttl": "3s",
	}); err != nil {
		t.Fatal(err)
	}
	roleID, err := c.Logical().Read("auth/approle/role/meshd/role-id")
	if err != nil {
		t.Fatal(err)
	}
	secretID, err := c.Logical().Write("auth/approle/role/meshd/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := &vault.AppRole{RoleID: roleID.Data["role_id"].(string), SecretID: secretID.Data["secret_id"].(string)}
	clock := testclock.New(time.Now())
	iss := e.issuer(vault.Options{AppRole: creds, Now: clock.Now})
	ctx := context.Background()
	issue := func(when string) {
		t.Helper()
		if _, err := iss.Issue(ctx, "payments"); err != nil {
			t.Fatalf("issue %s: %v", when, err)
		}
	}
	issue("after the first login")
	if got := e.metric("xspace_secrets_vault_logins_total", "result", "success"); got != 1 {
		t.Fatalf("logins = %v; want 1", got)
	}
	issue("with the same token")
	clock.Advance(2100 * time.Millisecond) // past two thirds of the token's 3s TTL
	issue("after the token aged")
	if got := e.metric("xspace_secrets_vault_logins_total", "result", "success"); got != 2 {
		t.Fatalf("logins = %v; want 2 (a new login before the token expires)", got)
	}

	// Revoked behind the issuer's back: the 403 makes it log in again.
	if _, err := c.Logical().Write("sys/leases/revoke-prefix/auth/approle/login", nil); err != nil {
		t.Fatal(err)
	}
	issue("after the token was revoked")
	if got := e.metric("xspace_secrets_vault_logins_total", "result", "success"); got != 3 {
		t.Fatalf("logins = %v; want 3", got)
	}

	bad, err := vault.New(vault.Options{Address: e.srv.Addr, Role: e.pki.Role, AppRole: &vault.AppRole{RoleID: creds.RoleID, SecretID: "wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Issue(ctx, "payments")
	if err == nil || !strings.Contains(err.Error(), "AppRole login") {
		t.Fatalf("issue with a wrong secret ID: %v; want a login error", err)
	}
	t.Logf("wrong secret ID: %v", err)
}

func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{})
	vaulttest.WritePolicy(t, e.srv.Client(t), "issue", vaulttest.IssuePolicy(e.pki.Mount, e.pki.Role))
	renewable := true
	req := func() *api.TokenCreateRequest {
		return &api.TokenCreateRequest{Policies: []string{"issue"}, TTL: "3s", ExplicitMaxTTL: "2m", Renewable: &renewable}
	}
	kept := e.issuer(vault.Options{Token: e.token(req())})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go kept.Run(ctx)
	// An issuer whose Run is not running: its token lapses.
	lapsed, err := vault.New(vault.Options{Address: e.srv.Addr, Role: e.pki.Role, Token: e.token(req())})
	if err != nil {
		t.Fatal(err)
	}

	// Vault's own clock lapses the token nobody renews: once it has, the
	// renewed one, made at the same moment, must still work.
	await.NoError(t, "the unrenewed 3s token to lapse", func() error {
		_, err := lapsed.Issue(ctx, "payments")
		switch {
		case err == nil:
			return errors.New("the unrenewed token still issues")
		case !errors.Is(err, vault.ErrPermissionDenied):
			return fmt.Errorf("issue with the unrenewed token: %w; want ErrPermissionDenied", err)
		}
		return nil
	})
	if _, err := kept.Issue(ctx, "payments"); err != nil {
		t.Fatalf("issue with a renewed token after its twin lapsed: %v", err)
	}
	if got := e.metric("xspace_secrets_vault_token_renewals_total", "result", "success"); got < 1 {
		t.Fatalf("token renewals = %v; want at least 1 by the time a 3s token lapsed", got)
	}
	if exp := e.metric("xspace_secrets_vault_token_expiry_timestamp_seconds"); exp < float64(time.Now().Unix()) {
		t.Fatalf("token expiry gauge %v is in the past", exp)
	}
}

func TestManagerRenewsFromVault(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{TTL: 4 * time.Second})
	m, changes := manager(t, e.issuer(vault.Options{}), secrets.ManagerOptions{})
	before := time.Now()
	first, err := m.Acquire(context.Background(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	waitChange(t, changes, "payments", 8*time.Second)
	rotated := time.Now()
	// Renewal is due at 0.5 ± 0.05 of the life left when the certificate
	// was received. Vault truncates NotAfter to whole seconds, so the life
	// is measured from the certificate, not from the 4s asked for; allow
	// scheduling slack on the late side.
	earliest := before.Add(first.NotAfter.Sub(after) * 45 / 100)
	latest := after.Add(first.NotAfter.Sub(before)*55/100 + time.Second)
	if rotated.Before(earliest) || rotated.After(latest) {
		t.Fatalf("renewed %s after issue, %s before expiry; want about half-way",
			rotated.Sub(before), first.NotAfter.Sub(rotated))
	}
	cur, ok := m.Current("payments")
	if !ok || cur.Serial == first.Serial {
		t.Fatalf("Current after renewal = %v, %v; want a new certificate", cur, ok)
	}
}

// certificates counts the certificates m lists with a serial: served ones.
func certificates(m *secrets.Manager) int {
	n := 0
	for _, c := range m.Certificates() {
		if c.Serial != "" {
			n++
		}
	}
	return n
}

// TestIssueServing: meshd's serving certificate comes from the server role,
// naming the hosts given (DNS and IP SANs) and the control plane's URI
// SAN; without a server role the error says which setting is missing.
func TestIssueServing(t *testing.T) {
	t.Parallel()
	e := startDev(t, vaulttest.PKIOptions{})
	vaulttest.WriteServerRole(t, e.srv.Client(t), e.pki.Mount, "meshd-server", time.Hour)
	c, err := e.issuer(vault.Options{ServerRole: "meshd-server"}).IssueServing(t.Context(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := secrets.ParsePEMCertificates(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != names.SPIFFE(names.ControlPlane) {
		t.Errorf("URI SANs %v, want %s", leaf.URIs, names.SPIFFE(names.ControlPlane))
	}
	noRole, err := vault.New(vault.Options{Address: e.srv.Addr, Role: e.pki.Role, Token: e.srv.Client(t).Token()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noRole.IssueServing(t.Context(), []string{"localhost"}); err == nil || !strings.Contains(err.Error(), "secrets.vault.server_role") {
		t.Fatalf("IssueServing without a server role = %v", err)
	}
}
