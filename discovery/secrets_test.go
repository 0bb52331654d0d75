package discovery

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/internal/testlog"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// failing decorates the real embedded CA: Issue fails while broken is set,
// as Vault's does during an outage.
type failing struct {
	*embedded.CA
	broken atomic.Bool
}

func (f *failing) Issue(ctx context.Context, service string) (secrets.Certificate, error) {
	if f.broken.Load() {
		return secrets.Certificate{}, errors.New("issuer down (test outage)")
	}
	return f.CA.Issue(ctx, service)
}

// published is what the cache holds for one service's identity.
type published struct {
	at       time.Time
	deleted  bool
	notAfter time.Time // zero for a tombstone
	serial   string
}

// recorder is the real cache, recording what is published for identities.
type recorder struct {
	*cache.Cache
	mu      sync.Mutex
	changed *sync.Cond
	last    map[string]published // by service
	log     []published
}

func newRecorder() *recorder {
	r := &recorder{Cache: cache.New([]string{resource.SecretType}), last: map[string]published{}}
	r.changed = sync.NewCond(&r.mu)
	return r
}

func (r *recorder) Update(items ...cache.Item) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		if it.Name != names.IdentitySecret {
			continue
		}
		p := published{at: time.Now()}
		if sec, ok := it.Msg.(*tlsv3.Secret); ok {
			block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return err
			}
			p.notAfter, p.serial = cert.NotAfter, cert.SerialNumber.String()
		}
		r.last[it.Scope] = p
		r.log = append(r.log, p)
	}
	r.changed.Broadcast()
	return r.Cache.Update(items...)
}

func (r *recorder) Delete(it cache.Item) {
	r.mu.Lock()
	r.last[it.Scope] = published{at: time.Now(), deleted: true}
	r.changed.Broadcast()
	r.mu.Unlock()
	r.Cache.Delete(it)
}

// await waits until cond holds of what service has published.
func (r *recorder) await(t *testing.T, timeout time.Duration, what string, cond func(published, bool) bool) published {
	t.Helper()
	deadline := time.AfterFunc(timeout, func() { r.mu.Lock(); r.changed.Broadcast(); r.mu.Unlock() })
	defer deadline.Stop()
	start := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		p, ok := r.last["payments"]
		if cond(p, ok) {
			return p
		}
		if time.Since(start) >= timeout {
			t.Fatalf("no %s within %s; last published %+v (%v)", what, timeout, p, ok)
		}
		r.changed.Wait()
	}
}

// sds is secret discovery over a real manager and CA, publishing into a
// recording cache.
type sds struct {
	iss  *failing
	mgr  *secrets.Manager
	pub  *recorder
	sec  *Secrets
	logs *testlog.Buffer
}

func newSDS(t *testing.T, life time.Duration, opts secrets.ManagerOptions) *sds {
	t.Helper()
	ca, err := embedded.Open(t.TempDir(), embedded.Options{Lifetime: life})
	if err != nil {
		t.Fatal(err)
	}
	s := &sds{iss: &failing{CA: ca}, pub: newRecorder(), logs: &testlog.Buffer{}}
	opts.Logger = s.logs.Logger()
	s.mgr = secrets.NewManager(s.iss, opts)
	s.sec = NewSecrets(s.mgr, s.pub, nil)
	return s
}

func (s *sds) run(t *testing.T) { go s.mgr.Run(t.Context()) }

// served runs the manager, acquires the identity and waits until it is published.
func (s *sds) served(t *testing.T) published {
	t.Helper()
	s.run(t)
	s.acquire(t)
	return s.pub.await(t, 5*time.Second, "identity", func(p published, ok bool) bool { return ok && p.serial != "" })
}

func (s *sds) acquire(t *testing.T) {
	t.Helper()
	if found, held := s.sec.Acquire(context.Background(), "payments", names.IdentitySecret); !found || !held {
		t.Fatalf("Acquire of an authenticated stream's identity: found %v, held %v", found, held)
	}
}

// TestFailedIdentityRequestLeavesOthersRenewed: a sidecar holds its
// identity through an issuer outage that outlasts it; another sidecar of
// the same service asks meanwhile, cannot be served, and goes away. The
// first one's identity is still held, and renewed when the issuer is back.
func TestFailedIdentityRequestLeavesOthersRenewed(t *testing.T) {
	s := newSDS(t, 2*time.Second, secrets.ManagerOptions{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	first := s.served(t)
	s.iss.broken.Store(true)
	s.pub.await(t, 5*time.Second, "withdrawal of the expired identity", func(p published, _ bool) bool { return p.serial == "" })
	s.acquire(t) // cannot be served
	s.sec.Release("payments", names.IdentitySecret)
	if !s.mgr.Held("payments") {
		t.Fatal("one sidecar left; the identity the other holds is no longer held")
	}
	s.iss.broken.Store(false)
	renewed := s.pub.await(t, 10*time.Second, "renewal", func(p published, _ bool) bool { return p.serial != "" && p.serial != first.serial })
	if renewed.deleted {
		t.Fatalf("after the other sidecar left: %+v, want a renewed identity", renewed)
	}
}

// TestIdentityReferencesUnderFailures drives acquires and releases of one
// identity while the issuer fails and recovers at random: at every step the
// identity is held exactly while some Acquire is not yet released, the
// cache holds it exactly then, and nothing is ever released more often
// than acquired.
func TestIdentityReferencesUnderFailures(t *testing.T) {
	clk := testclock.New(time.Now())
	s := newSDS(t, time.Hour, secrets.ManagerOptions{Now: clk.Now, Grace: -1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	rng := rand.New(rand.NewPCG(14, 14))
	outstanding, unserved := 0, 0
	for step := range 400 {
		switch op := rng.IntN(5); {
		case op == 0:
			s.iss.broken.Store(!s.iss.broken.Load())
		case op <= 2 || outstanding == 0:
			clk.Advance(2 * time.Millisecond) // a retry falls due: some Acquires ask the issuer
			s.acquire(t)
			outstanding++
			if _, ok := s.mgr.Current("payments"); !ok {
				unserved++
			}
		default:
			s.sec.Release("payments", names.IdentitySecret)
			outstanding--
		}
		s.pub.mu.Lock()
		p := s.pub.last["payments"]
		s.pub.mu.Unlock()
		_, current := s.mgr.Current("payments")
		switch {
		case s.mgr.Held("payments") != (outstanding > 0):
			t.Fatalf("step %d: held %v with %d acquires outstanding", step, s.mgr.Held("payments"), outstanding)
		case outstanding == 0 && !p.deleted:
			t.Fatalf("step %d: nothing held, the cache holds %+v", step, p)
		case outstanding > 0 && current && p.serial == "":
			t.Fatalf("step %d: a served identity is not published: %+v", step, p)
		case outstanding > 0 && !current && (p.serial != "" || p.deleted):
			t.Fatalf("step %d: no identity to serve, the cache holds %+v", step, p)
		}
	}
	if unserved < 10 {
		t.Fatalf("only %d acquires could not be served: the test did not drive failures", unserved)
	}
	for ; outstanding > 0; outstanding-- {
		s.sec.Release("payments", names.IdentitySecret)
	}
	if s.mgr.Held("payments") || s.logs.Count("released more often") > 0 {
		t.Fatalf("after every release: held %v; log:\n%s", s.mgr.Held("payments"), s.logs)
	}
}

// TestHeldIdentityIsServedWhenIssued: a sidecar asks for its identity while
// the issuer is down; it is retried until issued, then published to the
// sidecar without another request. One released before it could be issued
// is never published.
func TestHeldIdentityIsServedWhenIssued(t *testing.T) {
	s := newSDS(t, time.Hour, secrets.ManagerOptions{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Hour})
	s.run(t)
	s.iss.broken.Store(true)
	s.acquire(t)
	if h := s.mgr.Health(); h.OK() || h.Missing != 1 {
		t.Fatalf("health while a held identity is missing: %+v", h)
	}
	s.iss.broken.Store(false)
	s.pub.await(t, 10*time.Second, "identity", func(p published, ok bool) bool { return ok && p.serial != "" })
	if h := s.mgr.Health(); !h.OK() {
		t.Fatalf("health once served: %+v", h)
	}

	s.sec.Release("payments", names.IdentitySecret)
	s.pub.await(t, time.Second, "deletion of the identity", func(p published, _ bool) bool { return p.deleted })
}

// TestExpiredIdentityIsWithdrawn: an identity that cannot be renewed is
// replaced in the cache by a tombstone before its NotAfter, so streams
// holding it drop it and new ones are not given it; health is degraded.
func TestExpiredIdentityIsWithdrawn(t *testing.T) {
	s := newSDS(t, 2*time.Second, secrets.ManagerOptions{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	first := s.served(t)
	s.iss.broken.Store(true)
	gone := s.pub.await(t, 5*time.Second, "tombstone", func(p published, _ bool) bool { return p.serial == "" && !p.deleted })
	if !gone.at.Before(first.notAfter) {
		t.Fatalf("withdrawn at %s, not before its NotAfter %s", gone.at, first.notAfter)
	}
	if h := s.mgr.Health(); h.OK() || h.Expired != 1 {
		t.Fatalf("health with an expired held identity: %+v", h)
	}
	s.acquire(t) // another sidecar: it is not given the expired one
	s.pub.mu.Lock()
	defer s.pub.mu.Unlock()
	if p := s.pub.last["payments"]; p.serial != "" || p.deleted {
		t.Fatalf("after another sidecar asked, the cache holds %+v; want the tombstone", p)
	}
}
