package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/vault"
	"github.com/prisma-systems/xspace-mesh/secrets/vault/vaulttest"
)

// TestVaultOutage stops Vault (SIGKILL) for most of a certificate's life.
// The server keeps its state in file storage, as a production one does, so
// after a restart (and unseal) it is the same Vault with the same PKI.
func TestVaultOutage(t *testing.T) {
	t.Parallel()
	const (
		ttl  = 20 * time.Second
		near = 6 * time.Second
	)
	srv := vaulttest.StartServer(t, requireVault(t))
	pki := vaulttest.SetupPKI(t, srv.Client(t), vaulttest.PKIOptions{TTL: ttl})
	e := &env{t: t, srv: srv, pki: pki, reg: prometheus.NewRegistry()}
	m, changes := manager(t, e.issuer(vault.Options{}), secrets.ManagerOptions{
		NearExpiry: near, MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	ctx := context.Background()
	first, err := m.Acquire(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.TrustBundle(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)

	// Renewal falls due at about half-life and fails: the cached
	// certificate stays served, and health stays OK while it is not near
	// expiry.
	await.TrueWithin(t, ttl, "a failed renewal", func() bool { return m.Health().Failing > 0 })
	if cur, ok := m.Current("payments"); !ok || cur.Serial != first.Serial {
		t.Fatalf("during the outage Current = %v, %v; want the cached certificate", cur, ok)
	}
	if h := m.Health(); time.Until(first.NotAfter) > near+200*time.Millisecond && !h.OK() {
		t.Fatalf("health degraded %s before expiry: %+v", time.Until(first.NotAfter), h)
	}
	await.TrueWithin(t, ttl, "degraded near expiry", func() bool { return !m.Health().OK() })
	if left := time.Until(first.NotAfter); left > near {
		t.Fatalf("degraded %s before expiry; want within %s", left, near)
	}
	if cur, ok := m.Current("payments"); !ok || cur.Serial != first.Serial {
		t.Fatal("the cached certificate stopped being served before its expiry")
	}

	// Vault is back: renewal resumes before the certificate expires.
	srv.Restart(t)
	waitChange(t, changes, "payments", time.Until(first.NotAfter))
	cur, ok := m.Current("payments")
	if !ok || cur.Serial == first.Serial || !cur.NotAfter.After(first.NotAfter) {
		t.Fatalf("after Vault came back Current = %v, %v; want a new certificate", cur, ok)
	}
	if h := m.Health(); !h.OK() || h.Failing != 0 {
		t.Fatalf("health after recovery: %+v", h)
	}
}
