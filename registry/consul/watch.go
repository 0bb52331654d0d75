package consul

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/internal/backoff"
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
	// st is as current as Consul's answer to it; known that both have been
	// at once, so st has been served.
	healthOK, kvOK, known bool
}

// lose records that the last query of one kind failed.
func (w *watch) lose(ok *bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.setCurrent(ok, false)
}

// setCurrent records whether the last query of one kind succeeded; called
// with w.mu held.
func (w *watch) setCurrent(ok *bool, v bool) {
	*ok = v
	w.known = w.known || (w.healthOK && w.kvOK)
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
		go s.follow(ctx, w, s.healthQuery(w))
		go s.follow(ctx, w, s.kvQuery(w))
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
			s.leases.forget(vip)
			w.cancel()
		}
	}
}

// watched returns a watched VIP's last state, whether both its queries are
// current, and whether it was ever served (both current at once). With
// wait, a watch that has just started is waited for (within ctx; its first
// queries do not block), so that a Lookup right after Watch shares the
// watch's first queries instead of making its own.
func (s *Store) watched(ctx context.Context, vip string, wait bool) (st vipState, current, known bool) {
	s.watchMu.Lock()
	w := s.watches[vip]
	s.watchMu.Unlock()
	if w == nil {
		return vipState{}, false, false
	}
	if wait {
		select {
		case <-w.answered:
		case <-ctx.Done():
			return vipState{}, false, false
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st, w.healthOK && w.kvOK, w.known
}

// observeLeases hands a watch's lease checks to the leases, and fires the
// VIPs whose served instances changed. Only the live watch of its VIP does.
func (s *Store) observeLeases(w *watch) {
	w.mu.Lock()
	checks := w.st.leases
	w.mu.Unlock()
	s.watchMu.Lock()
	var changed []string
	if s.watches[w.vip] == w {
		changed = s.leases.observe(w.vip, checks, s.outage(), s.opts.Now())
	}
	s.watchMu.Unlock()
	s.fireVIPs(changed)
}

// fireVIPs calls the callbacks of the named VIPs' watches.
func (s *Store) fireVIPs(vips []string) {
	for _, vip := range vips {
		s.watchMu.Lock()
		w := s.watches[vip]
		s.watchMu.Unlock()
		if w != nil {
			s.fire(w)
		}
	}
}

// sweepLeases runs a pass of the leases every SweepInterval: graces end and
// expiries leave the window with no answer from Consul to tell.
func (s *Store) sweepLeases() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.fireVIPs(s.leases.pass(s.outage(), s.opts.Now()))
		}
	}
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

// answer is what one query returned: Consul's index, and how to apply it
// to the watch. It is applied only once it is known not to go back in time.
type answer struct {
	index uint64
	// apply applies the answer to the watch's state, marks that query
	// current, and reports whether the state changed.
	apply func() bool
}

// query is one of a watch's two blocking queries.
type query struct {
	what string
	// read runs the query with q.
	read func(q *capi.QueryOptions) (answer, error)
	// lost marks the watch's state as no longer current for this query.
	lost func()
}

// follow runs one blocking-query loop. It follows Consul's guidance (an
// index is never 0 after an answer; a query that returns early without a
// change is followed by a pause; errors back off with jitter), and never
// goes back in time:
//
//   - The index survives errors. After one, the next query waits only
//     RetryInterval on it, so that a Consul that is back is known to be
//     back at once.
//   - An answer whose index is below that of the last answer applied (a
//     server answering from the part of its log it has replayed since a
//     restart, a stale follower) is not applied: a consistent read, which
//     only a leader that has applied its whole log answers, replaces it.
//     Its answer is applied whatever its index: below, the cluster itself
//     went back (restored from a snapshot, or rebuilt), and the watch
//     starts over from there.
func (s *Store) follow(ctx context.Context, w *watch, q query) {
	defer s.wg.Done()
	var index, served uint64
	failures := 0
	for first := true; ctx.Err() == nil; first = false {
		wait := s.opts.WaitTime - time.Duration(rand.Int64N(int64(s.opts.WaitTime/10)+1))
		if failures > 0 {
			wait = s.opts.RetryInterval
		}
		s.metrics.transport.Inc()
		start := time.Now()
		a, err := s.ask(ctx, w, q, index, wait, served)
		s.metrics.transport.Dec()
		if first && w.pending.Add(-1) == 0 {
			close(w.answered)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			s.metrics.wakeups.WithLabelValues("error").Inc()
			if failures == 1 {
				// Debug: the store logs the outage once, not once per watched VIP.
				s.log.Debug("watch query failed; retrying with backoff", "vip", w.vip, "query", q.what, "error", err)
				// The VIP may have changed unseen: let the watcher look, fail
				// and keep its last known state (and show the error).
				s.fire(w)
			}
			if !backoff.Sleep(ctx, s.retryAfter(failures)) {
				return
			}
			continue
		}
		recovered := failures > 0
		if recovered {
			s.log.Debug("watch query recovered", "vip", w.vip, "query", q.what, "failed_queries", failures)
		}
		failures = 0
		early := a.index == index && time.Since(start) < wait/2
		changed := a.apply()
		served, index = a.index, max(a.index, 1)
		if changed {
			s.metrics.wakeups.WithLabelValues("changed").Inc()
		} else {
			s.metrics.wakeups.WithLabelValues("unchanged").Inc()
		}
		if q.what == queryInstances {
			s.observeLeases(w)
		}
		if changed || recovered || first {
			s.fire(w)
		}
		if early && !changed && !backoff.Sleep(ctx, s.retryAfter(1)) {
			return
		}
	}
}

// ask runs one query from index, and replaces an answer older than served
// by a consistent read (see follow).
func (s *Store) ask(ctx context.Context, w *watch, q query, index uint64, wait time.Duration, served uint64) (answer, error) {
	opts, cancel := s.blocking(ctx, index, wait)
	a, err := q.read(opts)
	cancel()
	if err != nil {
		q.lost()
		return answer{}, err
	}
	if a.index >= served {
		return a, nil
	}
	s.metrics.wakeups.WithLabelValues("behind").Inc()
	s.log.Debug("consul answered with an older index than the one served; confirming with a consistent read",
		"vip", w.vip, "query", q.what, "index", a.index, "served", served)
	cctx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
	defer cancel()
	consistent := &capi.QueryOptions{RequireConsistent: true, Datacenter: s.opts.Datacenter}
	a, err = q.read(consistent.WithContext(cctx))
	if err != nil {
		q.lost()
	}
	return a, err
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

// Names of a watch's queries.
const (
	queryInstances = "instances"
	queryPolicy    = "policy"
)

// healthQuery is the query of a VIP's health entries.
func (s *Store) healthQuery(w *watch) query {
	return query{
		what: queryInstances,
		read: func(q *capi.QueryOptions) (answer, error) {
			start := time.Now()
			entries, meta, err := s.client.Health().Service(w.vip, "", false, q)
			s.record(opWatch, start, err)
			if err != nil {
				return answer{}, wrap(err, "watch instances of %q", w.vip)
			}
			insts, leases := s.instancesOf(w.vip, entries)
			return answer{index: meta.LastIndex, apply: func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				has := len(entries) > 0
				changed := has != w.st.hasService || !reflect.DeepEqual(insts, w.st.instances) || !reflect.DeepEqual(leases, w.st.leases)
				w.st.hasService, w.st.instances, w.st.leases = has, insts, leases
				w.setCurrent(&w.healthOK, true)
				return changed
			}}, nil
		},
		lost: func() { w.lose(&w.healthOK) },
	}
}

// kvQuery is the query of a VIP's policy.
func (s *Store) kvQuery(w *watch) query {
	return query{
		what: queryPolicy,
		read: func(q *capi.QueryOptions) (answer, error) {
			start := time.Now()
			kv, meta, err := s.client.KV().Get(s.key(w.vip), q)
			s.record(opWatch, start, err)
			if err != nil {
				return answer{}, wrap(err, "watch policy of %q", w.vip)
			}
			p, perr := s.decodePolicy(w.vip, kv)
			return answer{index: meta.LastIndex, apply: func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				changed := !reflect.DeepEqual(p, w.st.policy) || !sameError(perr, w.st.policyErr)
				w.st.policy, w.st.policyErr = p, perr
				w.setCurrent(&w.kvOK, true)
				return changed
			}}, nil
		},
		lost: func() { w.lose(&w.kvOK) },
	}
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return (a == nil) == (b == nil)
	}
	return a.Error() == b.Error()
}
