package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/backoff"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Member keeps one instance registered with meshd, Eureka-style: it
// registers, retrying while meshd cannot take the instance (it may start
// later); renews the lease every Interval; registers again when meshd no
// longer knows the instance (its lease expired, or meshd lost it); retries
// a failed heartbeat with backoff capped at Interval, so that a lease of
// three intervals survives two lost heartbeats; and deregisters on Leave.
// meshctl's "instance register --heartbeat" and the demo services use it.
type Member struct {
	Client       *Client
	VIP, ID      string
	Registration Registration
	// Interval is the time between heartbeats; zero means a third of the
	// lease (Registration.TTLSeconds, or registry.DefaultTTL).
	Interval time.Duration
	// CallTimeout bounds each call to meshd; zero means Interval.
	CallTimeout time.Duration
	Logger      *slog.Logger

	registered atomic.Bool
}

// registerRetry is the wait between registration attempts while meshd
// cannot take the instance.
var registerRetry = backoff.Policy{Min: 200 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}

// Run registers the instance, then keeps it registered (Keep) until ctx
// ends, and returns nil. It returns meshd's error at once when meshd
// refuses the registration itself (a 4xx: a bad address, a token without
// the right): retrying cannot fix that.
func (m *Member) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := m.register(ctx)
		switch {
		case err == nil:
			m.Keep(ctx)
			return nil
		case ctx.Err() != nil:
			return nil
		case !retryable(err):
			return err
		}
		wait := registerRetry.Delay(attempt)
		m.logger().Warn("registration failed; retrying", "error", err, "attempt", attempt, "retry_in", wait)
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// Keep renews the lease of the registered instance every Interval,
// jittered so that instances started together do not heartbeat in
// lockstep, until ctx ends. A caller that registered the instance itself
// calls Keep rather than Run.
func (m *Member) Keep(ctx context.Context) {
	m.registered.Store(true)
	interval := m.interval()
	retry := backoff.Policy{Min: max(interval/8, 100*time.Millisecond), Max: interval, Jitter: 0.2}
	log := m.logger()
	log.Info("keeping the lease alive", "interval", interval)
	wait := backoff.Jitter(interval, 0.1)
	for failures := 0; backoff.Sleep(ctx, wait); {
		err := m.beat(ctx)
		switch {
		case err == nil && failures > 0:
			log.Info("heartbeat recovered", "after_failures", failures)
			failures = 0
		case err == nil:
		case ctx.Err() != nil:
			return
		default:
			failures++
			wait = retry.Delay(failures)
			log.Error("heartbeat failed; retrying", "error", err, "retry_in", wait, "failures", failures)
			continue
		}
		wait = backoff.Jitter(interval, 0.1)
	}
}

// Registered reports whether meshd holds the instance, as far as Run and
// Keep know.
func (m *Member) Registered() bool { return m.registered.Load() }

// Leave deregisters the instance if it is registered; call it once Run or
// Keep returned. After a failed deregistration a second call tries again.
func (m *Member) Leave(ctx context.Context) error {
	if !m.registered.Load() {
		m.logger().Info("left; the instance was not registered")
		return nil
	}
	if err := m.Client.Deregister(ctx, m.VIP, m.ID); err != nil && !IsNotFound(err) {
		m.logger().Error("deregistration failed; the lease will expire", "error", err)
		return fmt.Errorf("deregister %s/%s: %w", m.VIP, m.ID, err)
	}
	m.registered.Store(false)
	m.logger().Info("deregistered")
	return nil
}

func (m *Member) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.callTimeout())
	defer cancel()
	if _, err := m.Client.Register(ctx, m.VIP, m.ID, m.Registration); err != nil {
		return fmt.Errorf("register %s/%s: %w", m.VIP, m.ID, err)
	}
	m.registered.Store(true)
	r := m.Registration
	m.logger().Info("registered", "address", r.Address, "port", r.Port, "secure_port", r.SecurePort, "ttl_seconds", r.TTLSeconds)
	return nil
}

// beat renews the lease once, or registers again if meshd no longer knows
// the instance.
func (m *Member) beat(ctx context.Context) error {
	hctx, cancel := context.WithTimeout(ctx, m.callTimeout())
	defer cancel()
	_, err := m.Client.Heartbeat(hctx, m.VIP, m.ID)
	if !IsNotFound(err) {
		return err
	}
	m.registered.Store(false)
	m.logger().Warn("meshd no longer knows the instance; registering again", "reason", err)
	return m.register(ctx)
}

func (m *Member) interval() time.Duration {
	if m.Interval > 0 {
		return m.Interval
	}
	ttl := time.Duration(m.Registration.TTLSeconds) * time.Second
	if ttl <= 0 {
		ttl = registry.DefaultTTL.D()
	}
	return ttl / 3
}

func (m *Member) callTimeout() time.Duration {
	if m.CallTimeout > 0 {
		return m.CallTimeout
	}
	return m.interval()
}

func (m *Member) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// retryable says whether a failed call may succeed later: meshd did not
// answer, answered 5xx, or asked to slow down.
func retryable(err error) bool {
	apiErr, ok := errors.AsType[*Error](err)
	return !ok || apiErr.Status >= 500 || apiErr.Status == http.StatusTooManyRequests || apiErr.Status == http.StatusRequestTimeout
}
