package consul

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
)

// watch follows one VIP with two blocking queries, one on its health
// entries and one on its KV key, for as long as anyone watches it.
type watch struct {
	vip    string
	cancel context.CancelFunc
	// subs are the callbacks; guarded by Store.watchMu.
	subs map[*subscriber]struct{}

	// answered is closed once both queries have had a first outcome.
	answered chan struct{}
	pending  atomic.Int32

	mu sync.Mutex
	st vipState
	// healthOK and kvOK say that the last query of each kind succeeded, so
	// st is as current as Consul's answer to it.
	healthOK, kvOK bool
}

type subscriber struct {
	changed func()
	stopped atomic.Bool
}

// Watch calls changed whenever the VIP's instances (as the mesh maps them)
// or its policy change, including being created or deleted; once after the
// first answer of each query, and after each recovery from an error, so a
// caller that looked the VIP up in between converges; and once when a query
// starts failing, since the VIP may then change unseen (a Lookup then fails
// with registry.ErrUnavailable and the caller keeps what it has). Every caller
// watching one VIP shares its two blocking queries; the last stop ends
// them. changed runs on a watch goroutine and must return quickly; stop is
// idempotent, and once it returns no new call of changed starts.
func (s *Store) Watch(vip string, changed func()) (stop func()) {
	sub := &subscriber{changed: changed}
	s.watchMu.Lock()
	w := s.watches[vip]
	if w == nil {
		ctx, cancel := context.WithCancel(s.ctx)
		w = &watch{vip: vip, cancel: cancel, subs: make(map[*subscriber]struct{}), answered: make(chan struct{})}
		w.pending.Store(2)
		s.watches[vip] = w
		s.watches = shrink.Map(s.watches, &s.watchesPeak)
		s.metrics.watches.Inc()
		s.wg.Add(2)
		go s.follow(ctx, w, "instances", s.followHealth(w))
		go s.follow(ctx, w, "policy", s.followKV(w))
	}
	w.subs[sub] = struct{}{}
	s.watchMu.Unlock()
	return func() {
		if sub.stopped.Swap(true) {
			return
		}
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		delete(w.subs, sub)
		if len(w.subs) == 0 && s.watches[vip] == w {
			delete(s.watches, vip)
			s.watches = shrink.Map(s.watches, &s.watchesPeak)
			s.metrics.watches.Dec()
			w.cancel()
		}
	}
}

// watched returns a watched VIP's last state if both its queries are
// current. With wait, a watch that has just started is waited for (within
// ctx; its first queries do not block), so that a Lookup right after Watch
// shares the watch's first queries instead of making its own.
func (s *Store) watched(ctx context.Context, vip string, wait bool) (vipState, bool) {
	s.watchMu.Lock()
	w := s.watches[vip]
	s.watchMu.Unlock()
	if w == nil {
		return vipState{}, false
	}
	if wait {
		select {
		case <-w.answered:
		case <-ctx.Done():
			return vipState{}, false
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st, w.healthOK && w.kvOK
}

// fire calls the VIP's callbacks.
func (s *Store) fire(w *watch) {
	s.watchMu.Lock()
	subs := make([]*subscriber, 0, len(w.subs))
	for sub := range w.subs {
		subs = append(subs, sub)
	}
	s.watchMu.Unlock()
	for _, sub := range subs {
		if !sub.stopped.Load() {
			sub.changed()
		}
	}
}

// step runs one blocking query from index and applies its answer to the
// watch. It returns Consul's index and whether the mapped state changed.
type step func(ctx context.Context, index uint64, wait time.Duration) (uint64, bool, error)

// follow runs one blocking-query loop, following Consul's guidance: the
// index resets when it goes backwards and is never 0 after an answer; a
// query that returns early without a change is followed by a pause; errors
// back off with jitter, and the query after an error does not block.
func (s *Store) follow(ctx context.Context, w *watch, what string, query step) {
	defer s.wg.Done()
	var index uint64
	failures := 0
	for first := true; ctx.Err() == nil; first = false {
		wait := s.opts.WaitTime - time.Duration(rand.Int64N(int64(s.opts.WaitTime/10)+1))
		s.metrics.transport.Inc()
		start := time.Now()
		next, changed, err := query(ctx, index, wait)
		s.metrics.transport.Dec()
		if first && w.pending.Add(-1) == 0 {
			close(w.answered)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			// Start over with a query that answers at once: after an outage
			// the cluster may have been restored or rebuilt, and its
			// answer is what recovery reports.
			index = 0
			s.metrics.wakeups.WithLabelValues("error").Inc()
			if failures == 1 {
				// Debug: the store logs the outage once, not once per watched VIP.
				s.log.Debug("watch query failed; retrying with backoff", "vip", w.vip, "query", what, "error", err)
				// The VIP may have changed unseen: let the watcher look, fail
				// and keep its last known state (and show the error).
				s.fire(w)
			}
			if !sleep(ctx, backoff(s.opts.RetryInterval, s.opts.MaxRetryInterval, failures)) {
				return
			}
			continue
		}
		recovered := failures > 0
		if recovered {
			s.log.Debug("watch query recovered", "vip", w.vip, "query", what, "failed_queries", failures)
		}
		failures = 0
		early := next == index && time.Since(start) < wait/2
		if next < index {
			index = 0 // Consul's index went backwards (a restored or new cluster): start over
		} else {
			index = max(next, 1)
		}
		if changed {
			s.metrics.wakeups.WithLabelValues("changed").Inc()
		} else {
			s.metrics.wakeups.WithLabelValues("unchanged").Inc()
		}
		if changed || recovered || first {
			s.fire(w)
		}
		if early && !changed && !sleep(ctx, backoff(s.opts.RetryInterval, s.opts.MaxRetryInterval, 1)) {
			return
		}
	}
}

// blocking bounds a blocking query: its wait, Consul's own jitter (up to
// wait/16) and a query timeout of slack. A query from index 0 answers at
// once, so it gets the query timeout alone.
func (s *Store) blocking(ctx context.Context, index uint64, wait time.Duration) (*capi.QueryOptions, context.CancelFunc) {
	timeout := s.opts.QueryTimeout
	if index != 0 {
		timeout += wait + wait/16
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	q := s.queryOptions(ctx)
	q.WaitIndex, q.WaitTime = index, wait
	return q, cancel
}

// followHealth is the step of the instances query.
func (s *Store) followHealth(w *watch) step {
	return func(ctx context.Context, index uint64, wait time.Duration) (uint64, bool, error) {
		q, cancel := s.blocking(ctx, index, wait)
		defer cancel()
		start := time.Now()
		entries, meta, err := s.client.Health().Service(w.vip, "", false, q)
		s.record(opWatch, start, err)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.healthOK = false
			return 0, false, wrap(err, "watch instances of %q", w.vip)
		}
		insts := s.instancesOf(w.vip, entries)
		has := len(entries) > 0
		changed := has != w.st.hasService || !reflect.DeepEqual(insts, w.st.instances)
		w.st.hasService, w.st.instances, w.healthOK = has, insts, true
		return meta.LastIndex, changed, nil
	}
}

// followKV is the step of the policy query.
func (s *Store) followKV(w *watch) step {
	return func(ctx context.Context, index uint64, wait time.Duration) (uint64, bool, error) {
		q, cancel := s.blocking(ctx, index, wait)
		defer cancel()
		start := time.Now()
		kv, meta, err := s.client.KV().Get(s.key(w.vip), q)
		s.record(opWatch, start, err)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			w.kvOK = false
			return 0, false, wrap(err, "watch policy of %q", w.vip)
		}
		p, perr := s.decodePolicy(w.vip, kv)
		changed := !reflect.DeepEqual(p, w.st.policy) || !sameError(perr, w.st.policyErr)
		w.st.policy, w.st.policyErr, w.kvOK = p, perr, true
		return meta.LastIndex, changed, nil
	}
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return (a == nil) == (b == nil)
	}
	return a.Error() == b.Error()
}
