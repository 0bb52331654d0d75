package consul

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// State values of Health.
const (
	StateOK       = "ok"
	StateDegraded = "degraded"
)

// Health is the store's view of Consul, for /readyz and debug endpoints.
type Health struct {
	// State is StateOK or StateDegraded.
	State   string `json:"state"`
	Address string `json:"address"`
	// DegradedSince is when the current outage began.
	DegradedSince time.Time `json:"degraded_since,omitzero"`
	// LastError is the error that began or last extended the outage.
	LastError   string `json:"last_error,omitempty"`
	WatchedVIPs int    `json:"watched_vips"`
}

// OK reports whether Consul answers.
func (h Health) OK() bool { return h.State == StateOK }

// healthState is whether Consul answered the last request that reached a
// verdict. Guarded by mu.
type healthState struct {
	mu       sync.Mutex
	degraded bool
	since    time.Time
	lastErr  error
	lastSeen time.Time // last request with any verdict
	// wake asks the probe loop to re-plan (the state changed).
	wake chan struct{}
}

func (h *healthState) touch() {
	h.mu.Lock()
	h.lastSeen = time.Now()
	h.mu.Unlock()
}

// failed records that Consul could not answer.
func (s *Store) failed(err error) {
	h := &s.health
	h.mu.Lock()
	h.lastSeen = time.Now()
	h.lastErr = err
	began := !h.degraded
	if began {
		h.degraded, h.since = true, h.lastSeen
	}
	h.mu.Unlock()
	if began {
		s.metrics.degraded.Set(1)
		s.metrics.outages.Inc()
		s.log.Warn("consul unreachable: registry degraded; serving the last known state and retrying",
			"address", s.opts.Address, "error", err)
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// succeeded records that Consul answered.
func (s *Store) succeeded() {
	h := &s.health
	h.mu.Lock()
	h.lastSeen = time.Now()
	ended := h.degraded
	since := h.since
	if ended {
		h.degraded, h.since, h.lastErr = false, time.Time{}, nil
	}
	h.mu.Unlock()
	if ended {
		s.metrics.degraded.Set(0)
		s.log.Info("consul reachable again: registry recovered", "address", s.opts.Address,
			"outage", time.Since(since).Round(time.Millisecond))
	}
}

// Degraded reports whether Consul is currently unreachable.
func (s *Store) Degraded() bool {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.degraded
}

// Health reports whether Consul answers, and since when it does not.
func (s *Store) Health() Health {
	s.watchMu.Lock()
	watched := len(s.watches)
	s.watchMu.Unlock()
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{State: StateOK, Address: s.opts.Address, WatchedVIPs: watched}
	if h.degraded {
		out.State, out.DegradedSince = StateDegraded, h.since
		if h.lastErr != nil {
			out.LastError = h.lastErr.Error()
		}
	}
	return out
}

// probe asks the agent for the cluster leader: any answer means Consul is reachable.
func (s *Store) probe() error {
	return s.call(s.ctx, opProbe, func(ctx context.Context) error {
		_, err := s.client.Status().LeaderWithQueryOptions(s.queryOptions(ctx))
		return err
	})
}

// probeLoop keeps the degraded state current: while degraded it probes with
// backoff and jitter until Consul answers; while healthy it probes only when
// no request has reached Consul for ProbeInterval, so an idle store notices
// an outage too.
func (s *Store) probeLoop() {
	defer s.wg.Done()
	failures := 0
	for {
		delay := s.opts.ProbeInterval
		if s.Degraded() {
			failures++
			delay = backoff(s.opts.RetryInterval, s.opts.MaxRetryInterval, failures)
		} else {
			failures = 0
		}
		t := time.NewTimer(delay)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.health.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		s.health.mu.Lock()
		idle := time.Since(s.health.lastSeen) >= s.opts.ProbeInterval
		degraded := s.health.degraded
		s.health.mu.Unlock()
		if degraded || idle {
			_ = s.probe()
		}
	}
}

// backoff is the delay after n consecutive failures: doubling from base up
// to limit, then ±20 % jitter so that watches failing together do not
// retry together.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
