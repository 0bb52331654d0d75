package secrets

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/names"
)

// Defaults applied by NewManager to zero ManagerOptions fields.
const (
	DefaultRenewAt      = 0.5
	DefaultGrace        = time.Minute
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultIssueTimeout = 30 * time.Second
	DefaultMaxIssuing   = 8
	// renewJitter spreads renewals of certificates issued together: a
	// renewal falls within ±renewJitter of the lifetime around RenewAt.
	renewJitter = 0.05
	// maxMissingBackoff bounds the backoff of an identity a proxy holds
	// but has not received (its first issue failed, or it expired): the
	// proxy waits for it, so it is retried at least this often.
	maxMissingBackoff = 5 * time.Second
	// retryShare bounds the backoff of a renewal by this share of the time
	// the cached certificate stays served, so that retries come ever
	// closer together, never after expiry, whatever the backoff.
	retryShare = 3
	// minRetry is the shortest wait between two retries.
	minRetry = 100 * time.Millisecond
	// maxExpiryMargin is how long before its NotAfter a certificate stops
	// being served (at most a tenth of its lifetime): withdrawn then, it is
	// never handed out expired, however late a timer fires.
	maxExpiryMargin = time.Second
)

// ManagerOptions configure NewManager. The zero value is usable.
type ManagerOptions struct {
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the manager's metrics; nil registers none. Two
	// managers cannot share one Registerer (the second panics).
	Registerer prometheus.Registerer
	// RenewAt is the share of a certificate's remaining lifetime, counted
	// from when it was received, after which it is renewed; default 0.5.
	// Each renewal is jittered by ±5% of the lifetime.
	RenewAt float64
	// NearExpiry is how close to its NotAfter a served certificate must be
	// for Health to report degraded; 0 means a tenth of its lifetime.
	NearExpiry time.Duration
	// Grace is how long a certificate nobody holds stays cached, so a proxy
	// that reconnects gets it back without an issue; default 1m, negative
	// for none. A certificate in its grace period is not renewed.
	Grace time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between failed renewals; defaults 1s and 5m. Whatever they are, a
	// renewal of a served certificate is retried within a third of the time
	// it has left, and an identity not served at least every 5 s.
	MinBackoff, MaxBackoff time.Duration
	// IssueTimeout bounds one call to the Issuer; default 30s.
	IssueTimeout time.Duration
	// MaxIssuing bounds concurrent calls to the Issuer, so a fleet
	// reconnecting at once queues instead of flooding Vault; default 8.
	MaxIssuing int
}

// Manager caches one certificate per service that proxies hold, renews it
// in the background (Run) and keeps serving it while the Issuer fails,
// until it expires. It is safe for concurrent use.
type Manager struct {
	iss          Issuer
	log          *slog.Logger
	metrics      *metrics
	now          func() time.Time
	renewAt      float64
	nearExpiry   time.Duration
	grace        time.Duration
	minBackoff   time.Duration
	maxBackoff   time.Duration
	issueTimeout time.Duration
	kick         chan struct{}
	issuing      chan struct{} // a semaphore of MaxIssuing slots

	mu        sync.Mutex
	entries   map[string]*entry
	trust     []byte
	listeners []func(service string)

	// trustMu serialises fetches of the trust bundle.
	trustMu sync.Mutex
}

// entry is one service's cached certificate and its renewal state. Guarded
// by Manager.mu.
type entry struct {
	service  string
	refs     int
	cert     Certificate
	has      bool          // cert is set and was not seen expired
	lost     bool          // the last cert expired without a replacement
	life     time.Duration // cert's lifetime from when it was received
	nextTry  time.Time     // when the loop renews next (renewal time or backoff)
	failures int           // consecutive failed issues since the last success
	lastErr  error         // of the last failed issue; nil after a success
	released time.Time     // when refs fell to 0
	flight   *flight       // the issue in progress, if any
}

// flight is one call to the Issuer that concurrent callers wait for.
type flight struct {
	done chan struct{}
	err  error
	// cancelled: err is the end of the leader's own context, not a
	// failure of the issuer; waiters try again.
	cancelled bool
}

// NewManager returns a Manager issuing from iss. Call Run to renew.
func NewManager(iss Issuer, opts ManagerOptions) *Manager {
	m := &Manager{
		iss: iss, log: opts.Logger, now: opts.Now, renewAt: opts.RenewAt, nearExpiry: opts.NearExpiry,
		grace: opts.Grace, minBackoff: opts.MinBackoff, maxBackoff: opts.MaxBackoff,
		issueTimeout: opts.IssueTimeout, kick: make(chan struct{}, 1), entries: map[string]*entry{},
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m.log = m.log.With("component", "secrets")
	if m.now == nil {
		m.now = time.Now
	}
	if m.renewAt <= 0 || m.renewAt >= 1 {
		m.renewAt = DefaultRenewAt
	}
	setDefault(&m.grace, DefaultGrace)
	setDefault(&m.minBackoff, DefaultMinBackoff)
	setDefault(&m.maxBackoff, DefaultMaxBackoff)
	setDefault(&m.issueTimeout, DefaultIssueTimeout)
	m.maxBackoff = max(m.maxBackoff, m.minBackoff)
	if opts.MaxIssuing <= 0 {
		opts.MaxIssuing = DefaultMaxIssuing
	}
	m.issuing = make(chan struct{}, opts.MaxIssuing)
	m.metrics = newMetrics(opts.Registerer)
	return m
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Acquire takes one reference to service's certificate, to be given back
// with one Release, and returns the certificate. The reference is taken
// whatever the outcome, so that acquiring and releasing cannot disagree:
// when the certificate cannot be issued (or ctx ends first), Acquire
// returns the error and Run retries with backoff (at least every 5 s)
// until it is issued (listeners then hear of it) or released. The first
// Acquire issues (concurrent callers share one issue); later ones return
// the cached certificate, or, while issues fail, the last error until the
// next retry is due. Only an invalid service name takes no reference.
func (m *Manager) Acquire(ctx context.Context, service string) (Certificate, error) {
	if err := names.ValidateVIP(service); err != nil {
		return Certificate{}, fmt.Errorf("secrets: acquire: %w", err)
	}
	m.mu.Lock()
	e := m.entries[service]
	if e == nil {
		e = &entry{service: service}
		m.entries[service] = e
	}
	e.refs++
	m.mu.Unlock()
	for {
		m.mu.Lock()
		if e.usable(m.now()) {
			cert := e.cert
			m.mu.Unlock()
			return cert, nil
		}
		f, leader := e.flight, false
		if f == nil {
			if e.failures > 0 && m.now().Before(e.nextTry) {
				err := fmt.Errorf("secrets: certificate of %q not issued yet, retrying at %s: %w",
					service, e.nextTry.Format(time.RFC3339Nano), e.lastErr)
				m.mu.Unlock()
				return Certificate{}, err
			}
			f, leader = &flight{done: make(chan struct{})}, true
			e.flight = f
		}
		m.mu.Unlock()

		if leader {
			cert, _, err := m.issue(ctx, e, f, true)
			return cert, err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return Certificate{}, fmt.Errorf("secrets: acquire %q: %w", service, ctx.Err())
		}
		if f.err != nil && (!f.cancelled || ctx.Err() != nil) {
			return Certificate{}, f.err
		}
		// Success, or the leader's own context ended: look again.
	}
}

// callIssuer calls the Issuer once a slot is free, within IssueTimeout.
func (m *Manager) callIssuer(ctx context.Context, service string) (Certificate, error) {
	select {
	case m.issuing <- struct{}{}:
		defer func() { <-m.issuing }()
	case <-ctx.Done():
		return Certificate{}, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, m.issueTimeout)
	defer cancel()
	start := time.Now()
	cert, err := m.iss.Issue(ctx, service)
	m.metrics.issueSeconds.Observe(time.Since(start).Seconds())
	return cert, err
}

// countLocked counts the result of an issue in the metrics, before
// listeners hear of it. An issue cut short by its caller's context (a
// proxy gone, a shutdown) is no failure of the issuer.
func (m *Manager) countLocked(acquire, cancelled bool, err error) {
	switch {
	case cancelled:
	case acquire && err != nil:
		m.metrics.acquireErrors.Inc()
	case acquire:
	case err == nil:
		m.metrics.renewals.WithLabelValues(resultSuccess).Inc()
	default:
		m.metrics.renewals.WithLabelValues(resultFailure).Inc()
	}
}

// usable reports whether e's certificate may be served at now: until
// withdrawAt.
func (e *entry) usable(now time.Time) bool { return e.has && now.Before(e.withdrawAt()) }

// withdrawAt is when e's certificate stops being served: a margin before
// its NotAfter (maxExpiryMargin, at most a tenth of its lifetime).
func (e *entry) withdrawAt() time.Time {
	return e.cert.NotAfter.Add(-min(maxExpiryMargin, e.life/10))
}

// Held reports whether some holder holds service's certificate (Acquire
// without its Release yet), whether or not it could be issued.
func (m *Manager) Held(service string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[service]
	return e != nil && e.refs > 0
}

// Release drops a reference taken by Acquire. A certificate nobody holds
// stays cached for the grace period, then is forgotten.
func (m *Manager) Release(service string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[service]
	if e == nil || e.refs == 0 {
		m.log.Warn("certificate released more often than acquired", "service", service)
		return
	}
	e.refs--
	if e.refs > 0 {
		return
	}
	e.released = m.now()
	if (m.grace < 0 || !e.has) && e.flight == nil {
		delete(m.entries, service)
		m.updateGaugesLocked(m.now())
		return
	}
	m.wake()
}

// Current returns service's cached certificate while it is valid.
func (m *Manager) Current(service string) (Certificate, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[service]
	if e == nil || !e.usable(m.now()) {
		return Certificate{}, false
	}
	return e.cert, true
}

// OnChange registers fn, called outside the manager's locks after
// service's certificate was rotated (or expired without a replacement, when
// Current stops returning it), and with service "" when the trust bundle
// changed. fn runs on the renewal goroutine: it must not block for long.
func (m *Manager) OnChange(fn func(service string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listeners = append(m.listeners, fn)
}

func (m *Manager) notify(services ...string) {
	if len(services) == 0 {
		return
	}
	m.mu.Lock()
	fns := m.listeners
	m.mu.Unlock()
	for _, s := range services {
		for _, fn := range fns {
			fn(s)
		}
	}
}

// wake makes Run look at the entries again.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// issue runs flight f for entry e: one call to the Issuer, whose result is
// stored in e if e is still the service's entry. acquire says whether the
// caller is Acquire or Run.
func (m *Manager) issue(ctx context.Context, e *entry, f *flight, acquire bool) (Certificate, bool, error) {
	cert, err := m.callIssuer(ctx, e.service)
	if err == nil && cert.Service != e.service {
		err = fmt.Errorf("issuer returned a certificate of %q", cert.Service)
	}
	if err != nil {
		err = fmt.Errorf("secrets: issue certificate of %q: %w", e.service, err)
	}

	now := m.now()
	cancelled := err != nil && ctx.Err() != nil
	m.mu.Lock()
	e.flight = nil
	live := m.entries[e.service] == e
	rotated := false
	switch {
	case !live:
	case err == nil:
		// Holders learn of the new certificate, unless the only one is the
		// Acquire that issued it: it gets the certificate directly.
		rotated = e.has || e.failures > 0 || e.refs > 1 || !acquire
		if e.failures > 0 && !e.has {
			m.log.Info("certificate issued after failed attempts", "service", e.service, "failures", e.failures)
		}
		e.cert, e.has, e.lost, e.failures, e.lastErr = cert, true, false, 0, nil
		e.life = cert.NotAfter.Sub(now)
		e.nextTry = m.renewTime(cert, now)
	case cancelled && (e.refs > 0 || e.has):
		// nothing learned of the issuer: the schedule stands
	case e.refs > 0 || e.has:
		e.failures++
		e.lastErr = err
		e.nextTry = now.Add(m.retryAfter(e, now))
	default: // an issue nobody holds any more failed: forget the service
		delete(m.entries, e.service)
	}
	m.countLocked(acquire, cancelled, err)
	m.updateGaugesLocked(now)
	f.err, f.cancelled = err, cancelled
	close(f.done)
	m.mu.Unlock()

	m.wake()
	if rotated {
		m.notify(e.service)
	}
	return cert, live && err == nil, err
}
