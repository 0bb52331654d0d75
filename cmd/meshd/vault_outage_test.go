package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/vault/vaulttest"
)

// EnvVaultLife sets the certificate lifetime of
// TestVaultOutageUnderHeldIdentities (default 16s); RELIABILITY.md records
// a run with XSPACE_VAULT_LIFE=120s, a 61 s outage.
const EnvVaultLife = "XSPACE_VAULT_LIFE"

// TestVaultOutageUnderHeldIdentities runs meshd on a real Vault (file
// storage, so a restart is the same Vault) with 16 s certificates, and
// stops Vault for longer than a renewal interval (half the lifetime) but
// less than the lifetime, under sidecars holding their identities:
//
//   - no sidecar ever holds an expired identity, and none is ever sent
//     one: the renewal is retried before expiry and lands in time;
//   - a sidecar that subscribed during the outage has its identity within
//     seconds of Vault's return, with no request of its own;
//   - /readyz is not ready while that identity is missing, ready after.
func TestVaultOutageUnderHeldIdentities(t *testing.T) {
	bin, err := vaulttest.Bin()
	if err != nil {
		t.Fatal(err)
	}
	if bin == "" {
		t.Skip(vaulttest.SkipMessage)
	}
	t.Parallel()
	life := 16 * time.Second
	if env := os.Getenv(EnvVaultLife); env != "" {
		if life, err = time.ParseDuration(env); err != nil {
			t.Fatalf("%s=%s: %v", EnvVaultLife, env, err)
		}
	}
	v := vaulttest.StartServer(t, bin)
	pki := vaulttest.SetupPKI(t, v.Client(t), vaulttest.PKIOptions{TTL: life})
	p, token := meshdOnVault(t, v.Addr, v.Token, pki)

	a := holdIdentity(t, p.xds, token("payments"), "payments", "payments-1")
	first := a.await(t, 10*time.Second, "identity", func(evs []identityEvent) bool { return len(evs) > 0 })[0]
	v.Stop(t)
	stopped := time.Now()

	b := holdIdentity(t, p.xds, token("orders"), "orders", "orders-1")
	waitReady(t, p.http, false, `"missing":1`)
	if c := holdIdentity(t, p.xds, token("payments"), "payments", "payments-2"); c.await(t, 5*time.Second, "cached identity",
		func(evs []identityEvent) bool { return len(evs) > 0 })[0].serial != first.serial {
		t.Fatal("a sidecar that subscribed during the outage was not served the cached identity")
	}
	// The outage lasts past a retry of the failed renewal: a second failure.
	waitSecrets(t, p.http, life, "a failed retry of payments' renewal", func(c secrets.CertInfo) bool { return c.Service == "payments" && c.Failures > 1 })
	v.Restart(t)
	back := time.Now()

	got := b.await(t, 15*time.Second, "identity after Vault's return", func(evs []identityEvent) bool { return len(evs) > 0 })[0]
	t.Logf("outage %s; the sidecar that subscribed during it got its identity %s after Vault's return",
		back.Sub(stopped).Round(time.Millisecond), got.at.Sub(back).Round(time.Millisecond))
	renewed := a.await(t, life, "renewed identity", func(evs []identityEvent) bool { return evs[len(evs)-1].serial != first.serial })
	t.Logf("payments renewed %s after Vault's return, %s before its previous certificate's NotAfter",
		renewed[len(renewed)-1].at.Sub(back).Round(time.Millisecond), first.notAfter.Sub(renewed[len(renewed)-1].at).Round(time.Millisecond))
	waitReady(t, p.http, true, `"missing":0`)
	for _, s := range []*sdsClient{a, b} {
		s.neverExpired(t)
	}
	if strings.Contains(p.logged(), "released more often than acquired") {
		t.Fatal("meshd released an identity more often than it acquired it")
	}
}

// meshdOnVault starts meshd with secrets from the PKI of the Vault at addr,
// logged in with vaultToken, and returns it with a way to mint sidecars' tokens.
func meshdOnVault(t *testing.T, addr, vaultToken string, pki vaulttest.PKI) (*process, func(service string) string) {
	t.Helper()
	meshdBin, meshctlBin := binaries(t)
	cfg := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := fmt.Sprintf("secrets:\n  type: vault\n  vault:\n    address: %s\n    mount: %s\n    role: %s\n    token: %s\n",
		addr, pki.Mount, pki.Role, vaultToken)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	p := startMeshd(t, meshdBin, data, "--config", cfg)
	return p, func(service string) string {
		return strings.TrimSpace(meshctl(t, meshctlBin, p.http, "token", "issue", "--service", service,
			"--keyring", filepath.Join(data, "tokens.yaml")))
	}
}

// identityEvent is one change of the identity a sidecar holds: a
// certificate received, or the identity removed.
type identityEvent struct {
	at       time.Time
	serial   string // "" when removed
	notAfter time.Time
}

// sdsClient holds its identity over SDS as Envoy does: it subscribes once,
// ACKs every response and keeps what it was sent.
type sdsClient struct {
	mu      sync.Mutex
	changed *sync.Cond
	events  []identityEvent
	done    bool
}

func holdIdentity(t *testing.T, xdsAddr, tok, service, id string) *sdsClient {
	t.Helper()
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok))
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: id, Cluster: service}, TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: []string{names.IdentitySecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &sdsClient{}
	s.changed = sync.NewCond(&s.mu)
	go s.receive(t, stream)
	return s
}

func (s *sdsClient) receive(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) {
	defer func() { s.mu.Lock(); s.done = true; s.changed.Broadcast(); s.mu.Unlock() }()
	for {
		r, err := stream.Recv()
		if err != nil {
			return
		}
		now := time.Now()
		var evs []identityEvent
		for _, res := range r.GetResources() {
			var sec tlsv3.Secret
			if err := res.GetResource().UnmarshalTo(&sec); err != nil {
				t.Errorf("identity: %v", err)
				return
			}
			block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Errorf("identity certificate: %v", err)
				return
			}
			evs = append(evs, identityEvent{at: now, serial: cert.SerialNumber.String(), notAfter: cert.NotAfter})
		}
		if slices.Contains(r.GetRemovedResources(), names.IdentitySecret) {
			evs = append(evs, identityEvent{at: now})
		}
		s.mu.Lock()
		s.events = append(s.events, evs...)
		s.changed.Broadcast()
		s.mu.Unlock()
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			return
		}
	}
}

// await waits until cond holds of the certificates received (removals
// left out), and returns them.
func (s *sdsClient) await(t *testing.T, timeout time.Duration, what string, cond func([]identityEvent) bool) []identityEvent {
	t.Helper()
	timer := time.AfterFunc(timeout, func() { s.mu.Lock(); s.done = true; s.changed.Broadcast(); s.mu.Unlock() })
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var certs []identityEvent
		for _, e := range s.events {
			if e.serial != "" {
				certs = append(certs, e)
			}
		}
		if len(certs) > 0 && cond(certs) {
			return certs
		}
		if s.done {
			t.Fatalf("no %s within %s (received %+v)", what, timeout, s.events)
		}
		s.changed.Wait()
	}
}

// neverExpired checks that every certificate the sidecar received was
// valid when it arrived, and was replaced (or removed) before its NotAfter:
// the sidecar never held an expired identity.
func (s *sdsClient) neverExpired(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for i, e := range s.events {
		if e.serial == "" {
			continue
		}
		if !e.at.Before(e.notAfter) {
			t.Errorf("certificate %s sent %s after its NotAfter", e.serial, e.at.Sub(e.notAfter))
		}
		until := now
		if i+1 < len(s.events) {
			until = s.events[i+1].at
		}
		if !until.Before(e.notAfter) {
			t.Errorf("certificate %s held %s past its NotAfter", e.serial, until.Sub(e.notAfter))
		}
	}
}

// waitSecrets waits up to timeout until /debug/secrets lists a
// certificate for which cond holds.
func waitSecrets(t *testing.T, base string, timeout time.Duration, what string, cond func(secrets.CertInfo) bool) {
	t.Helper()
	await.Within(t, timeout, "/debug/secrets to show "+what, func() error {
		resp, err := http.Get(base + "/debug/secrets")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		var body struct{ Certificates []secrets.CertInfo }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return fmt.Errorf("decode /debug/secrets: %w", err)
		}
		if !slices.ContainsFunc(body.Certificates, cond) {
			return fmt.Errorf("certificates: %+v", body.Certificates)
		}
		return nil
	})
}
