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
	// between failed renewals; defaults 1s and 5m.
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
	life     time.Duration // cert's lifetime from when it was received
	nextTry  time.Time     // when the loop renews next (renewal time or backoff)
	failures int           // consecutive failed issues since the last success
	lastErr  string
	released time.Time // when refs fell to 0
	flight   *flight   // the issue in progress, if any
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

// Acquire returns service's certificate and holds a reference to it until
// Release. The first Acquire issues it (concurrent callers share one
// issue); later ones return the cached certificate. A failed issue caches
// nothing and holds no reference.
func (m *Manager) Acquire(ctx context.Context, service string) (Certificate, error) {
	if err := names.ValidateVIP(service); err != nil {
		return Certificate{}, fmt.Errorf("secrets: acquire: %w", err)
	}
	for {
		m.mu.Lock()
		e := m.entries[service]
		if e == nil {
			e = &entry{service: service}
			m.entries[service] = e
		}
		if e.usable(m.now()) {
			e.refs++
			cert := e.cert
			m.mu.Unlock()
			return cert, nil
		}
		f, leader := e.flight, false
		if f == nil {
			f, leader = &flight{done: make(chan struct{})}, true
			e.flight = f
		}
		m.mu.Unlock()

		if leader {
			cert, stored, err := m.issue(ctx, e, f, true)
			if err != nil {
				return Certificate{}, err
			}
			if stored {
				return cert, nil
			}
			continue // released and dropped meanwhile: start over
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

func (e *entry) usable(now time.Time) bool { return e.has && now.Before(e.cert.NotAfter) }

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
	if m.grace < 0 && e.flight == nil {
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
// caller is Acquire (which then holds a reference on success) or Run.
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
		// Holders (or the cached copy) learn of the new certificate; a
		// first Acquire's caller gets it directly.
		rotated = e.has || e.refs > 0
		e.cert, e.has, e.failures, e.lastErr = cert, true, 0, ""
		e.life = cert.NotAfter.Sub(now)
		e.nextTry = m.renewTime(cert, now)
		if acquire {
			e.refs++
		}
	case cancelled && (e.refs > 0 || e.has):
		// nothing learned of the issuer: the schedule stands
	case e.refs > 0 || e.has:
		e.failures++
		e.lastErr = err.Error()
		e.nextTry = now.Add(m.backoff(e.failures))
	default: // a first issue failed: forget the service
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
