package consul

import (
	"context"
	"sync"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/internal/backoff"
)

// State values of Health.
const (
	StateOK       = "ok"
	StateDegraded = "degraded"
)

// Health is the store's view of Consul and of its instances' leases, for
// /readyz and debug endpoints.
type Health struct {
	// State is StateOK or StateDegraded.
	State   string `json:"state"`
	Address string `json:"address"`
	// DegradedSince is when the current outage began.
	DegradedSince time.Time `json:"degraded_since,omitzero"`
	// LastError is the error that began or last extended the outage.
	LastError   string `json:"last_error,omitempty"`
	WatchedVIPs int    `json:"watched_vips"`
	// SelfPreservation, Overdue and Renewing are those of the embedded
	// registry, over the watched VIPs' instances registered through meshd
	// (see leases): whether lease expiry is suspended, how many leases are
	// overdue and still served, and how many instances renew.
	SelfPreservation bool `json:"self_preservation"`
	Overdue          int  `json:"overdue"`
	Renewing         int  `json:"renewing"`
}

// OK reports whether Consul answers.
func (h Health) OK() bool { return h.State == StateOK }

// healthState is whether Consul answers, with hysteresis: one request that
// Consul cannot answer makes the store degraded; only a run of answers
// lasting RecoverAfter, with no failure in between and the probe's
// consistent read among them, ends the outage. So a Consul that comes back
// and stumbles for a moment (a server replaying its log, an election) is
// one outage, logged once each way, and /readyz does not flap. Guarded by mu.
type healthState struct {
	mu       sync.Mutex
	degraded bool
	since    time.Time
	lastErr  error
	lastSeen time.Time // last request with any verdict
	// answering, while degraded, is when the current run of answers began;
	// zero after a failure.
	answering time.Time
	// ended is when the last outage ended.
	ended time.Time
	// wake asks the probe loop to re-plan (the state changed).
	wake chan struct{}
}

func (h *healthState) touch() {
	h.mu.Lock()
	h.lastSeen = time.Now()
	h.mu.Unlock()
}

func (h *healthState) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// failed records that Consul could not answer.
func (s *Store) failed(err error) {
	h := &s.health
	h.mu.Lock()
	h.lastSeen = time.Now()
	h.lastErr, h.answering = err, time.Time{}
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
		h.poke()
	}
}

// succeeded records that Consul answered; probed says the answer was the
// probe's consistent read, the only one that may end an outage.
func (s *Store) succeeded(probed bool) {
	h := &s.health
	h.mu.Lock()
	now := time.Now()
	h.lastSeen = now
	if !h.degraded {
		h.mu.Unlock()
		return
	}
	first := h.answering.IsZero()
	if first {
		h.answering = now
	}
	ended := probed && now.Sub(h.answering) >= s.opts.RecoverAfter
	since := h.since
	if ended {
		h.degraded, h.since, h.lastErr, h.answering, h.ended = false, time.Time{}, nil, time.Time{}, now
	}
	h.mu.Unlock()
	switch {
	case ended:
		s.metrics.degraded.Set(0)
		s.log.Info("consul reachable again: registry recovered", "address", s.opts.Address,
			"outage", now.Sub(since).Round(time.Millisecond))
	case first:
		h.poke() // probe at a steady pace until the outage can end
	}
}

// Degraded reports whether the store is in an outage of Consul.
func (s *Store) Degraded() bool {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.degraded
}

// outage returns what the leases need of the health state.
func (s *Store) outage() outage {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return outage{degraded: s.health.degraded, ended: s.health.ended}
}

// Health reports whether Consul answers, since when it does not, and the
// state of the leases.
func (s *Store) Health() Health {
	s.watchMu.Lock()
	watched := len(s.watches)
	s.watchMu.Unlock()
	engaged, c := s.leases.status()
	out := Health{
		State: StateOK, Address: s.opts.Address, WatchedVIPs: watched,
		SelfPreservation: engaged, Overdue: c.Overdue, Renewing: c.Renewing,
	}
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.degraded {
		out.State, out.DegradedSince = StateDegraded, h.since
		if h.lastErr != nil {
			out.LastError = h.lastErr.Error()
		}
	}
	return out
}

// probe reads the policy prefix consistently: an answer means that Consul
// answers and that its leader has applied its log, so it serves current
// state, not what a restarting server has replayed so far.
func (s *Store) probe() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.QueryTimeout)
	defer cancel()
	q := &capi.QueryOptions{RequireConsistent: true, Datacenter: s.opts.Datacenter}
	_, _, err := s.client.KV().Get(s.opts.KVPrefix+"/", q.WithContext(ctx))
	s.record(opProbe, start, err)
	return err
}

// probeLoop keeps the degraded state current: while degraded it probes with
// backoff and jitter until Consul answers, then at RetryInterval until the
// outage can end; while healthy it probes only when no request has reached
// Consul for ProbeInterval, so an idle store notices an outage too.
func (s *Store) probeLoop() {
	defer s.wg.Done()
	failures := 0
	for {
		delay := s.opts.ProbeInterval
		s.health.mu.Lock()
		degraded, answering := s.health.degraded, !s.health.answering.IsZero()
		s.health.mu.Unlock()
		switch {
		case degraded && answering:
			failures = 0
			delay = s.opts.RetryInterval
		case degraded:
			failures++
			delay = s.retryAfter(failures)
		default:
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
		degraded = s.health.degraded
		s.health.mu.Unlock()
		if degraded || idle {
			_ = s.probe()
		}
	}
}

// retryAfter is the delay after n consecutive failures: doubling from
// RetryInterval up to MaxRetryInterval, jittered so that watches failing
// together do not retry together.
func (s *Store) retryAfter(n int) time.Duration {
	return backoff.Policy{Min: s.opts.RetryInterval, Max: s.opts.MaxRetryInterval, Jitter: 0.2}.Delay(n)
}
