package server

import (
	"container/list"
	"context"
	"net"
	"sync"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
)

// Admission classes, in the order the queue serves them: a stream that
// presented a valid token is admitted before every stream that did not, so
// a flood of unauthenticated streams cannot starve a sidecar.
const (
	classAuthenticated = iota
	classUnauthenticated
	classes
)

// tokens hands out admissions at a bounded rate; *rate.Limiter is one.
type tokens interface {
	Wait(ctx context.Context) error
	Allow() bool
}

var _ tokens = (*rate.Limiter)(nil)

// admission admits new streams: at most maxPerPeer open or waiting per
// peer address, at a rate bounded by tokens, from a queue of at most
// maxWaiting that serves authenticated streams first and each class in
// arrival order. One goroutine (run) hands out the tokens.
type admission struct {
	tokens     tokens
	maxPerPeer int
	maxWaiting int
	metrics    *metrics

	mu      sync.Mutex
	queues  [classes]*list.List // of *waiter
	peers   map[string]int      // streams open or waiting, by peer address
	peak    int                 // for shrink.Map of peers
	arrived chan struct{}       // a waiter was queued (capacity 1)
}

// waiter is a stream waiting for admission; ready is closed when it is
// admitted, or refused to make room for an authenticated stream.
type waiter struct {
	ready   chan struct{}
	elem    *list.Element // nil once out of the queue
	refused bool
}

func newAdmission(t tokens, maxPerPeer, maxWaiting int, m *metrics) *admission {
	a := &admission{
		tokens: t, maxPerPeer: maxPerPeer, maxWaiting: maxWaiting, metrics: m,
		peers: map[string]int{}, arrived: make(chan struct{}, 1),
	}
	for i := range a.queues {
		a.queues[i] = list.New()
	}
	return a
}

// peerOf is the address a stream comes from, without its port.
func peerOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// enter counts a new stream against its peer, or refuses it when the peer
// has maxPerPeer streams open or waiting already. Every enter that succeeds
// is undone by one leave.
func (a *admission) enter(peer string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers[peer] >= a.maxPerPeer {
		a.metrics.refused.WithLabelValues(refusedPeer).Inc()
		return status.Errorf(codes.ResourceExhausted,
			"%d xDS streams from %s are open or waiting, the most one address may have (xds.max_streams_per_peer); close some, or raise the limit if many proxies share this address",
			a.peers[peer], peer)
	}
	a.peers[peer]++
	a.peers = shrink.Map(a.peers, &a.peak)
	return nil
}

func (a *admission) leave(peer string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers[peer]--; a.peers[peer] <= 0 {
		delete(a.peers, peer)
		a.peers = shrink.Map(a.peers, &a.peak)
	}
}

// wait returns once the stream is admitted, or with an error when its
// context ends first or the queue is full.
func (a *admission) wait(ctx context.Context, class int) error {
	a.mu.Lock()
	if a.waiting() == 0 && a.tokens.Allow() {
		a.mu.Unlock()
		return nil
	}
	if a.waiting() >= a.maxWaiting && !a.makeRoom(class) {
		a.mu.Unlock()
		a.metrics.refused.WithLabelValues(refusedQueue).Inc()
		return errQueueFull(a.maxWaiting)
	}
	w := &waiter{ready: make(chan struct{})}
	w.elem = a.queues[class].PushBack(w)
	a.metrics.waiting.Inc()
	a.mu.Unlock()
	select {
	case a.arrived <- struct{}{}:
	default:
	}
	select {
	case <-w.ready:
		if w.refused {
			return errQueueFull(a.maxWaiting)
		}
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		if w.elem == nil { // admitted or refused meanwhile
			if w.refused {
				return errQueueFull(a.maxWaiting)
			}
			return nil
		}
		a.queues[class].Remove(w.elem)
		a.metrics.waiting.Dec()
		return status.Errorf(codes.Unavailable, "stream admission: %v", ctx.Err())
	}
}

func errQueueFull(n int) error {
	return status.Errorf(codes.Unavailable,
		"%d xDS streams are waiting for admission already (xds.max_waiting_streams); retry with backoff", n)
}

// makeRoom refuses the newest waiter of a class after class, so that a
// stream of class is never refused for a queue full of streams served
// after it. It reports whether it made room. Called with a.mu held.
func (a *admission) makeRoom(class int) bool {
	for c := classes - 1; c > class; c-- {
		if e := a.queues[c].Back(); e != nil {
			w := a.queues[c].Remove(e).(*waiter)
			w.elem, w.refused = nil, true
			a.metrics.waiting.Dec()
			a.metrics.refused.WithLabelValues(refusedQueue).Inc()
			close(w.ready)
			return true
		}
	}
	return false
}

// waiting counts the queued streams. Called with a.mu held.
func (a *admission) waiting() int {
	n := 0
	for _, q := range a.queues {
		n += q.Len()
	}
	return n
}

// run hands out one token at a time to the first waiter of the first
// non-empty class, until ctx ends.
func (a *admission) run(ctx context.Context) {
	for {
		a.mu.Lock()
		n := a.waiting()
		a.mu.Unlock()
		if n == 0 {
			select {
			case <-a.arrived:
				continue
			case <-ctx.Done():
				return
			}
		}
		if err := a.tokens.Wait(ctx); err != nil {
			return
		}
		// Tokens that came due while the wait overslept (a timer fires
		// late on a busy machine) admit more waiters at once, so the rate
		// holds.
		for a.admitNext() && a.tokens.Allow() {
		}
	}
}

// admitNext admits the first waiter of the first non-empty class and
// reports whether more are waiting. The token is lost if every waiter left
// meanwhile.
func (a *admission) admitNext() (more bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, q := range a.queues {
		if e := q.Front(); e != nil {
			w := q.Remove(e).(*waiter)
			w.elem = nil
			a.metrics.waiting.Dec()
			close(w.ready)
			break
		}
	}
	return a.waiting() > 0
}
