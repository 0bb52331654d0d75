package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
)

func TestAcquireIssuesOnceAndCaches(t *testing.T) {
	e := newEnv(t, embedded.Options{}, secrets.ManagerOptions{Grace: -1})
	var wg sync.WaitGroup
	serials := make([]string, 8)
	for i := range serials {
		wg.Go(func() { serials[i] = e.acquire("payments").Serial })
	}
	wg.Wait()
	for _, s := range serials {
		if s != serials[0] {
			t.Fatalf("concurrent Acquires got different certificates: %v", serials)
		}
	}
	if n := len(e.iss.calls()); n != 1 {
		t.Fatalf("8 concurrent Acquires issued %d times; want 1", n)
	}
	if cur, ok := e.m.Current("payments"); !ok || cur.Serial != serials[0] {
		t.Fatalf("Current = %v, %v; want the acquired certificate", cur, ok)
	}
	infos := e.m.Certificates()
	if len(infos) != 1 || infos[0].Refs != 8 || infos[0].Serial != serials[0] {
		t.Fatalf("Certificates() = %+v; want payments with 8 references", infos)
	}
	if got := e.metric("xspace_secrets_certificates"); got != 1 {
		t.Fatalf("xspace_secrets_certificates = %v; want 1", got)
	}
	if got := e.metric("xspace_secrets_soonest_expiry_timestamp_seconds"); got != float64(infos[0].NotAfter.Unix()) {
		t.Fatalf("soonest expiry gauge %v; want %d", got, infos[0].NotAfter.Unix())
	}
	for range 8 {
		e.m.Release("payments")
	}
	if _, ok := e.m.Current("payments"); ok || len(e.m.Certificates()) != 0 {
		t.Fatal("a certificate nobody holds is still cached without a grace period")
	}
	if got := e.metric("xspace_secrets_certificates"); got != 0 {
		t.Fatalf("xspace_secrets_certificates = %v after release; want 0", got)
	}
	e.m.Release("payments") // one too many: logged, not fatal
}

func TestReleasedCertificateKeptForGrace(t *testing.T) {
	e := newEnv(t, embedded.Options{}, secrets.ManagerOptions{Grace: 300 * time.Millisecond})
	e.run()
	first := e.acquire("orders")
	e.m.Release("orders")
	again := e.acquire("orders") // a reconnect within the grace period
	if again.Serial != first.Serial || len(e.iss.calls()) != 1 {
		t.Fatalf("reacquire within grace issued again (%d issues)", len(e.iss.calls()))
	}
	e.m.Release("orders")
	await.TrueWithin(e.t, 5*time.Second, "forgotten after the grace period", func() bool {
		_, ok := e.m.Current("orders")
		return !ok && len(e.m.Certificates()) == 0
	})
}

// TestFailedAcquireHoldsAndIsRetried: an identity that cannot be issued is
// held all the same by the Acquire that asked for it, health says it is
// missing, a later Acquire does not ask the issuer before the retry is
// due, retries back off but never beyond a few seconds, and every Acquire
// is undone by exactly one Release.
func TestFailedAcquireHoldsAndIsRetried(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, embedded.Options{Now: clk.Now}, secrets.ManagerOptions{
		Now: clk.Now, MinBackoff: time.Second, MaxBackoff: time.Hour,
	})
	e.iss.setFail(true)
	_, err := e.m.Acquire(context.Background(), "payments")
	if !errors.Is(err, errIssuer) || !strings.Contains(err.Error(), `"payments"`) {
		t.Fatalf("Acquire error %v; want the issuer's error, naming the service", err)
	}
	if _, ok := e.m.Current("payments"); ok || !e.m.Held("payments") {
		t.Fatal("a failed Acquire serves a certificate, or holds nothing")
	}
	if h := e.m.Health(); h.OK() || h.Missing != 1 {
		t.Fatalf("health with a held identity that could not be issued: %+v", h)
	}
	if got := e.metric("xspace_secrets_acquire_errors_total"); got != 1 {
		t.Fatalf("acquire errors = %v; want 1", got)
	}
	if _, err := e.m.Acquire(context.Background(), "payments"); err == nil || len(e.iss.calls()) != 1 {
		t.Fatalf("an Acquire before the retry is due: %v after %d issues; want the last error, no new issue", err, len(e.iss.calls()))
	}
	acquired := 2
	var waits []time.Duration
	for range 8 {
		next := e.m.Certificates()[0].NextRenewal
		waits = append(waits, next.Sub(clk.Now()))
		clk.Set(next)
		if _, err := e.m.Acquire(context.Background(), "payments"); err == nil {
			t.Fatal("Acquire succeeded while the issuer fails")
		}
		acquired++
	}
	for i, w := range waits {
		if w <= 0 || w > 5*time.Second {
			t.Fatalf("retry %d of a missing identity after %s (all: %v); want within 5s", i+1, w, waits)
		}
	}
	if _, err := e.m.Acquire(context.Background(), "Not A Service"); err == nil || e.m.Held("Not A Service") {
		t.Fatal("Acquire accepted an invalid service name")
	}
	e.iss.setFail(false)
	clk.Set(e.m.Certificates()[0].NextRenewal)
	e.acquire("payments")
	acquired++
	if h := e.m.Health(); !h.OK() {
		t.Fatalf("health once issued: %+v", h)
	}
	for range acquired {
		if !e.m.Held("payments") {
			t.Fatal("released before every Acquire was undone")
		}
		e.m.Release("payments")
	}
	if e.m.Held("payments") {
		t.Fatalf("still held after %d Acquires and as many Releases", acquired)
	}
}

// TestMissingIdentityIsIssuedByRun: Run retries an identity whose first
// issue failed and tells the holders when it is issued.
func TestMissingIdentityIsIssuedByRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, embedded.Options{}, secrets.ManagerOptions{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Hour})
	e.iss.setFail(true)
	if _, err := e.m.Acquire(context.Background(), "payments"); err == nil {
		t.Fatal("Acquire succeeded while the issuer fails")
	}
	e.run()
	await.TrueWithin(e.t, 5*time.Second, "retried", func() bool { return len(e.iss.calls()) >= 3 })
	e.iss.setFail(false)
	e.waitChange("payments", 10*time.Second)
	if _, ok := e.m.Current("payments"); !ok || !e.m.Health().OK() {
		t.Fatalf("after the retry issued it: health %+v", e.m.Health())
	}
}

func TestRenewalAtHalfLife(t *testing.T) {
	t.Parallel()
	const life = 4 * time.Second
	e := newEnv(t, embedded.Options{Lifetime: life}, secrets.ManagerOptions{})
	e.run()
	before := time.Now()
	first := e.acquire("payments")
	after := time.Now()
	e.waitChange("payments", 3*life)
	rotated := time.Now()
	// Renewal is due at 0.5 ± 0.05 of the life left when the certificate
	// was received (between before and after); allow scheduling slack.
	earliest := before.Add(first.NotAfter.Sub(after) * 45 / 100)
	latest := after.Add(first.NotAfter.Sub(before)*55/100 + time.Second)
	if rotated.Before(earliest) || rotated.After(latest) {
		t.Fatalf("rotated %s after issue, %s before expiry; want about half-way",
			rotated.Sub(before), first.NotAfter.Sub(rotated))
	}
	cur, ok := e.m.Current("payments")
	if !ok || cur.Serial == first.Serial || !cur.NotAfter.After(first.NotAfter) {
		t.Fatalf("after rotation Current = %v; want a newer certificate than %v", cur, first)
	}
	if got := e.metric("xspace_secrets_renewals_total", "result", "success"); got < 1 {
		t.Fatalf("successful renewals = %v; want at least 1", got)
	}
	if got := e.metric("xspace_secrets_issue_seconds"); got < 2 {
		t.Fatalf("issue_seconds has %v samples; want at least 2", got)
	}
	infos := e.m.Certificates()
	if len(infos) != 1 || infos[0].NextRenewal.Before(cur.NotBefore) || !infos[0].NextRenewal.Before(cur.NotAfter) {
		t.Fatalf("Certificates() = %+v; want the next renewal within the new certificate's life", infos)
	}
}

func TestRenewalBacksOffAndServesCached(t *testing.T) {
	t.Parallel()
	const life = 6 * time.Second
	e := newEnv(t, embedded.Options{Lifetime: life}, secrets.ManagerOptions{
		NearExpiry: 2 * time.Second, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
	})
	e.run()
	first := e.acquire("payments")
	e.iss.setFail(true)

	// Renewals start at about half-life and fail; the cached certificate
	// stays served and health stays OK until it nears expiry.
	await.TrueWithin(e.t, life, "four failed renewals", func() bool { return e.metric("xspace_secrets_renewals_total", "result", "failure") >= 4 })
	if cur, ok := e.m.Current("payments"); !ok || cur.Serial != first.Serial {
		t.Fatalf("while the issuer fails Current = %v, %v; want the cached certificate", cur, ok)
	}
	if h := e.m.Health(); time.Until(first.NotAfter) > 2*time.Second+100*time.Millisecond && !h.OK() {
		t.Fatalf("health degraded %s before expiry: %+v", time.Until(first.NotAfter), h)
	}
	calls := e.iss.calls()[1:] // the first is the Acquire
	for i := 1; i < len(calls); i++ {
		gap := calls[i].Sub(calls[i-1])
		want := min(100*time.Millisecond<<(i-1), 400*time.Millisecond)
		if gap < want/2-10*time.Millisecond || gap > want+300*time.Millisecond {
			t.Errorf("retry %d came %s after the previous; want between %s and %s", i, gap, want/2, want)
		}
	}

	await.TrueWithin(e.t, life, "degraded near expiry", func() bool { return !e.m.Health().OK() })
	h := e.m.Health()
	if h.NearExpiry != 1 || h.Failing != 1 || !strings.Contains(h.LastError, errIssuer.Error()) {
		t.Fatalf("near expiry health = %+v", h)
	}
	if cur, ok := e.m.Current("payments"); !ok || cur.Serial != first.Serial {
		t.Fatal("the cached certificate stopped being served before its expiry")
	}

	e.iss.setFail(false)
	e.waitChange("payments", 2*time.Second)
	cur, ok := e.m.Current("payments")
	if !ok || cur.Serial == first.Serial {
		t.Fatalf("after the issuer recovered Current = %v, %v; want a new certificate", cur, ok)
	}
	if h := e.m.Health(); !h.OK() || h.Failing != 0 {
		t.Fatalf("health after recovery: %+v", h)
	}
}

// TestRenewalRetriesBeforeExpiryWhateverTheBackoff: with a backoff longer
// than the certificate has left, a failed renewal is retried within a
// third of the time left, so an issuer back before expiry renews it in time.
func TestRenewalRetriesBeforeExpiryWhateverTheBackoff(t *testing.T) {
	t.Parallel()
	const life = 6 * time.Second
	e := newEnv(t, embedded.Options{Lifetime: life}, secrets.ManagerOptions{MinBackoff: 10 * time.Second, MaxBackoff: time.Minute})
	e.run()
	first := e.acquire("payments")
	e.iss.setFail(true)
	await.TrueWithin(e.t, life, "a failed renewal", func() bool { return e.metric("xspace_secrets_renewals_total", "result", "failure") >= 1 })
	failed := time.Now()
	next := e.m.Certificates()[0].NextRenewal
	if left := first.NotAfter.Sub(failed); next.Sub(failed) > left/3+100*time.Millisecond {
		t.Fatalf("after a failed renewal with %s left, the next try is %s later (backoff at least 5s); want within a third", left, next.Sub(failed))
	}
	e.iss.setFail(false)
	e.waitChange("payments", life)
	if renewed := time.Now(); !renewed.Before(first.NotAfter) {
		t.Fatalf("renewed %s after the certificate expired", renewed.Sub(first.NotAfter))
	}
	if h := e.m.Health(); !h.OK() || h.Expired != 0 {
		t.Fatalf("health after renewal: %+v", h)
	}
}

func TestExpiredWithoutRenewal(t *testing.T) {
	t.Parallel()
	const life = 3 * time.Second
	e := newEnv(t, embedded.Options{Lifetime: life}, secrets.ManagerOptions{
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	e.run()
	first := e.acquire("payments")
	e.iss.setFail(true)
	e.waitChange("payments", 2*life) // expiry withdraws the certificate
	// A moment (a tenth of its life, at most 1s) before NotAfter, never after.
	if left := time.Until(first.NotAfter); left < 0 || left > time.Second {
		t.Fatalf("withdrawn %s before its NotAfter; want within a second", left)
	}
	if _, ok := e.m.Current("payments"); ok {
		t.Fatal("an expired certificate is still served")
	}
	if h := e.m.Health(); h.OK() || h.Expired != 1 {
		t.Fatalf("health with an expired held certificate: %+v", h)
	}
	if _, err := e.m.Acquire(context.Background(), "payments"); !errors.Is(err, errIssuer) {
		t.Fatalf("Acquire while expired and failing: %v", err)
	}
	e.iss.setFail(false)
	// The retry (every 200ms) issues a new certificate and tells holders;
	// its own renewal would come only after 0.45 of its 3s.
	e.waitChange("payments", time.Second)
	if _, ok := e.m.Current("payments"); !ok || !e.m.Health().OK() {
		t.Fatalf("not recovered: health %+v", e.m.Health())
	}
}

func TestHealthNearExpiry(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, embedded.Options{Lifetime: time.Hour, Now: clk.Now}, secrets.ManagerOptions{
		NearExpiry: 10 * time.Minute, Now: clk.Now,
	})
	c := e.acquire("payments")
	tests := []struct {
		at       time.Time
		ok, curr bool
	}{
		{c.NotAfter.Add(-30 * time.Minute), true, true},
		{c.NotAfter.Add(-10*time.Minute - time.Second), true, true},
		{c.NotAfter.Add(-10 * time.Minute), false, true},
		{c.NotAfter.Add(-time.Second - time.Nanosecond), false, true},
		// withdrawn a second before NotAfter, so it is never handed out expired
		{c.NotAfter.Add(-time.Second), false, false},
		{c.NotAfter, false, false},
	}
	for _, tt := range tests {
		clk.Set(tt.at)
		h := e.m.Health()
		_, cur := e.m.Current("payments")
		if h.OK() != tt.ok || cur != tt.curr {
			t.Errorf("%s before expiry: health %+v, served %v; want OK %v, served %v",
				c.NotAfter.Sub(tt.at), h, cur, tt.ok, tt.curr)
		}
	}
	clk.Set(c.NotAfter.Add(-time.Minute))
	e.m.Release("payments") // no longer served: not a reason to degrade
	if h := e.m.Health(); !h.OK() {
		t.Fatalf("an unheld certificate degraded health: %+v", h)
	}
}

func TestTrustBundleChangeNotifies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, embedded.Options{Lifetime: 2 * time.Second}, secrets.ManagerOptions{})
	first, err := e.m.TrustBundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	other, err := newCA(t, embedded.Options{}).TrustBundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.iss.mu.Lock()
	e.iss.trust = other
	e.iss.mu.Unlock()
	if again, _ := e.m.TrustBundle(context.Background()); string(again) != string(first) {
		t.Fatal("the trust bundle is not cached")
	}
	e.run()
	e.acquire("payments")
	e.waitChange("", 4*time.Second) // refreshed with the renewal
	if got, _ := e.m.TrustBundle(context.Background()); string(got) != string(other) {
		t.Fatal("TrustBundle does not return the refreshed bundle")
	}
	if got := e.metric("xspace_secrets_trust_bundle_updates_total"); got != 1 {
		t.Fatalf("trust bundle updates = %v; want 1", got)
	}
}

// slow decorates an issuer: each Issue takes a while, and the most calls
// in progress at once are recorded.
type slow struct {
	secrets.Issuer
	mu        sync.Mutex
	now, most int
}

func (s *slow) Issue(ctx context.Context, service string) (secrets.Certificate, error) {
	s.mu.Lock()
	s.now++
	s.most = max(s.most, s.now)
	s.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // a slow peer: the issuer takes a while
	defer func() { s.mu.Lock(); s.now--; s.mu.Unlock() }()
	return s.Issuer.Issue(ctx, service)
}

func TestConcurrentIssuesAreBounded(t *testing.T) {
	iss := &slow{Issuer: newCA(t, embedded.Options{})}
	m := secrets.NewManager(iss, secrets.ManagerOptions{MaxIssuing: 3})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := m.Acquire(context.Background(), fmt.Sprintf("svc-%d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if iss.most != 3 {
		t.Fatalf("at most %d issues ran at once; want MaxIssuing = 3", iss.most)
	}
	if n := len(m.Certificates()); n != 20 {
		t.Fatalf("%d certificates cached; want 20", n)
	}
}
