package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/backoff"
)

// maxWait bounds one sleep of the renewal loop, so a clock jump is noticed.
const maxWait = time.Minute

// Run renews cached certificates until ctx ends: each at about RenewAt of
// its lifetime, and after a failure with jittered exponential backoff, while
// the cached certificate stays served until its NotAfter. It also drops
// expired certificates and ones released longer than the grace period, and
// refreshes the trust bundle after each round of renewals.
func (m *Manager) Run(ctx context.Context) {
	// Since Go 1.23, Reset discards a stale tick: no drain needed.
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		due, wait, changed := m.sweep()
		m.notify(changed...)
		for _, e := range due {
			if ctx.Err() != nil {
				return
			}
			m.renew(ctx, e)
		}
		if len(due) > 0 {
			m.refreshTrust(ctx)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-timer.C:
		}
	}
}

// sweep drops what is expired or past its grace, claims the entries due for
// renewal (starting their flights), and returns how long to sleep before the
// next event and which services lost their certificate to expiry.
func (m *Manager) sweep() (due []*entry, wait time.Duration, expired []string) {
	now := m.now()
	next := now.Add(maxWait)
	at := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, e := range m.entries {
		if e.flight != nil {
			continue
		}
		if e.has && !e.usable(now) {
			m.log.Error("certificate expired without a replacement (withdrawn a moment before its NotAfter); no longer served",
				"service", name, "serial", e.cert.Serial, "not_after", e.cert.NotAfter, "last_error", e.lastErr)
			e.cert, e.has, e.lost = Certificate{}, false, true
			expired = append(expired, name)
		}
		if e.refs == 0 {
			if !e.has || !now.Before(e.released.Add(m.grace)) {
				delete(m.entries, name)
				continue
			}
			at(e.released.Add(m.grace))
			continue
		}
		if !now.Before(e.nextTry) {
			e.flight = &flight{done: make(chan struct{})}
			due = append(due, e)
			continue
		}
		at(e.nextTry)
		if e.has {
			at(e.withdrawAt())
			at(e.cert.NotAfter.Add(-m.nearWindow(e)))
		}
	}
	m.updateGaugesLocked(now)
	return due, max(next.Sub(now), time.Millisecond), expired
}

// renew issues e's certificate again; its flight was started by sweep.
func (m *Manager) renew(ctx context.Context, e *entry) {
	m.mu.Lock()
	f, prev := e.flight, e.cert
	m.mu.Unlock()
	cert, stored, err := m.issue(ctx, e, f, false)
	switch {
	case err != nil && ctx.Err() != nil:
		// shutting down: not a renewal failure
	case err != nil:
		m.mu.Lock()
		failures, retry, has := e.failures, e.nextTry, e.has
		m.mu.Unlock()
		switch {
		case failures&(failures-1) != 0:
			// logged at 1, 2, 4, 8... failures: less as an outage lasts
		case has:
			m.log.Warn("certificate renewal failed; still serving the cached one",
				"service", e.service, "error", err, "failures", failures,
				"retry_at", retry, "cached_not_after", prev.NotAfter)
		default:
			m.log.Error("certificate issue failed; none served, the proxies holding it wait for it", "service", e.service,
				"error", err, "failures", failures, "retry_at", retry)
		}
	case stored:
		m.log.Info("certificate renewed", "service", e.service, "serial", cert.Serial,
			"not_after", cert.NotAfter, "previous_serial", prev.Serial)
	}
}

// renewTime is when a certificate received at now is renewed: at RenewAt
// (±jitter) of the time from now (or its NotBefore, if later) to NotAfter.
// It counts from receipt, not NotBefore, because issuers backdate NotBefore
// for clock skew.
func (m *Manager) renewTime(c Certificate, now time.Time) time.Time {
	start := now
	if c.NotBefore.After(start) {
		start = c.NotBefore
	}
	life := c.NotAfter.Sub(start)
	if life <= 0 {
		return now.Add(m.minBackoff)
	}
	frac := m.renewAt + renewJitter*(2*rand.Float64()-1)
	frac = min(max(frac, 0.05), 0.95)
	at := start.Add(time.Duration(frac * float64(life)))
	// An issuer handing out very short certificates gets no tighter loop
	// than MinBackoff, unless that would come after half its life: a
	// renewal is always due while the certificate is served.
	return later(at, now.Add(min(m.minBackoff, life/2)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// retryAfter is the wait before retry number e.failures of e's issue:
// backoff, bounded so that a certificate still served is retried within a
// third of the time it has left (so before it is withdrawn, however long
// the backoff has grown), and one not served (never issued, or expired)
// at least every maxMissingBackoff.
func (m *Manager) retryAfter(e *entry, now time.Time) time.Duration {
	if !e.usable(now) {
		return m.backoff(e.failures, min(m.maxBackoff, maxMissingBackoff))
	}
	left := e.withdrawAt().Sub(now)
	return max(min(m.backoff(e.failures, m.maxBackoff), left/retryShare), min(minRetry, left))
}

// backoff is the wait before retry number failures: MinBackoff doubled per
// failure up to limit, then jittered to between half and all of it.
func (m *Manager) backoff(failures int, limit time.Duration) time.Duration {
	return backoff.Policy{Min: m.minBackoff, Max: limit, Jitter: 0.5}.Delay(failures)
}

// nearWindow is how long before NotAfter e's certificate counts as near
// expiry: NearExpiry, or a tenth of its lifetime from receipt (NotBefore
// is backdated by issuers, so it would overstate short lifetimes).
func (m *Manager) nearWindow(e *entry) time.Duration {
	if m.nearExpiry > 0 {
		return m.nearExpiry
	}
	return e.life / 10
}

// TrustBundle returns the trust bundle: cached after the first fetch, and
// refreshed by Run after each round of renewals. Treat it as read-only.
func (m *Manager) TrustBundle(ctx context.Context) ([]byte, error) {
	m.mu.Lock()
	b := m.trust
	m.mu.Unlock()
	if b != nil {
		return b, nil
	}
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	m.mu.Lock()
	b = m.trust
	m.mu.Unlock()
	if b != nil {
		return b, nil
	}
	return m.fetchTrust(ctx)
}

// refreshTrust fetches the trust bundle again; on failure the cached one
// stays.
func (m *Manager) refreshTrust(ctx context.Context) {
	m.trustMu.Lock()
	defer m.trustMu.Unlock()
	if _, err := m.fetchTrust(ctx); err != nil && ctx.Err() == nil {
		m.log.Warn("trust bundle refresh failed; still serving the cached one", "error", err)
	}
}

// fetchTrust asks the issuer for the trust bundle and caches it, telling
// listeners (service "") when it differs from the cached one. Called with
// trustMu held.
func (m *Manager) fetchTrust(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.issueTimeout)
	defer cancel()
	b, err := m.iss.TrustBundle(ctx)
	if err == nil && len(bytes.TrimSpace(b)) == 0 {
		err = errors.New("issuer returned an empty trust bundle")
	}
	if err == nil {
		_, err = ParsePEMCertificates(b)
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: trust bundle: %w", err)
	}
	m.mu.Lock()
	changed := m.trust != nil && !bytes.Equal(m.trust, b)
	m.trust = b
	m.mu.Unlock()
	if changed {
		m.metrics.trustUpdates.Inc()
		m.log.Info("trust bundle changed")
		m.notify("")
	}
	return b, nil
}
