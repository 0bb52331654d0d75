package embedded

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Group commit: every write is an op handed to one goroutine, the committer,
// which takes all the ops waiting, checks each against the committed state,
// writes them in one bbolt transaction (one fsync), applies them to memory in
// order and only then answers each. While one commit is on disk, the next
// writes queue, so the number of fsyncs follows the disk's speed, not the
// number of writers, and a write is still acknowledged only once it is on
// disk. Heartbeats are not ops: they never wait for the committer.

// maxBatch bounds the writes one transaction carries.
const maxBatch = 512

// errClosed answers writes made after Close.
var errClosed = errors.New("embedded: the store is closed")

// op is one write. The committer calls plan (which must not change the
// store), then, if plan asked for it, write inside the batch's transaction,
// and after the commit apply with mu held.
type op interface {
	// footprint says what the op touches, before plan has run.
	footprint() footprint
	// plan checks the op against the committed state and prepares its
	// writes. It reports whether there is anything to write; an error
	// answers the op without writing.
	plan(s *Store) (bool, error)
	// write puts the prepared changes into tx.
	write(tx *bolt.Tx) error
	// apply makes the committed change visible in memory; mu is held.
	apply(s *Store)
}

// footprint is what an op reads and writes. A VIP-level op (putting or
// deleting a VIP, or a registration that creates one) touches the VIP and
// all its instances; an instance-level op touches one instance and reads
// only that its VIP exists. An exclusive op (a sweep) touches everything.
type footprint struct {
	vip, id   string
	vipLevel  bool
	exclusive bool
}

// batchKeys collects the footprints of a batch. Ops whose footprints are
// disjoint can be planned against the same committed state and applied in
// any order, so a batch holds only such ops.
type batchKeys struct {
	n         int
	exclusive bool
	vipLevel  map[string]bool
	touched   map[string]bool
	instances map[instanceRef]bool
}

func newBatchKeys() *batchKeys {
	return &batchKeys{vipLevel: map[string]bool{}, touched: map[string]bool{}, instances: map[instanceRef]bool{}}
}

// admits reports whether an op with footprint f may join the batch.
func (b *batchKeys) admits(f footprint) bool {
	switch {
	case b.n == 0:
		return true
	case f.exclusive || b.exclusive:
		return false
	case f.vipLevel:
		return !b.touched[f.vip]
	}
	return !b.vipLevel[f.vip] && !b.instances[instanceRef{f.vip, f.id}]
}

func (b *batchKeys) add(f footprint) {
	b.n++
	b.exclusive = b.exclusive || f.exclusive
	b.touched[f.vip] = true
	if f.vipLevel {
		b.vipLevel[f.vip] = true
	} else {
		b.instances[instanceRef{f.vip, f.id}] = true
	}
}

// request is one write waiting for its commit.
type request struct {
	op   op
	done chan error
}

// queue holds the writes waiting for the committer, oldest first.
type queue struct {
	mu      sync.Mutex
	pending []*request
	closed  bool
	wake    chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

// push adds r; false once the queue is closed.
func (q *queue) push(r *request) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.pending = append(q.pending, r)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// empty reports whether no request waits.
func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending) == 0
}

// take removes and returns up to n of the oldest requests.
func (q *queue) take(n int) []*request {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = min(n, len(q.pending))
	out := q.pending[:n:n]
	q.pending = q.pending[n:]
	return out
}

// close refuses further pushes and returns what was still waiting.
func (q *queue) close() []*request {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	rest := q.pending
	q.pending = nil
	return rest
}

// submit hands o to the committer and waits for its answer. It does not
// give up when the caller's context ends: the write may already be on its
// way to disk, and its caller must not believe it failed.
func (s *Store) submit(o op) error {
	r := &request{op: o, done: make(chan error, 1)}
	if !s.q.push(r) {
		return errClosed
	}
	return <-r.done
}

// commitLoop is the only goroutine that writes to bbolt. It waits only
// when nothing is left to commit: more than maxBatch writes may be waiting.
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	var held []*request
	for {
		if len(held) == 0 && s.q.empty() {
			select {
			case <-s.q.wake:
			case <-s.stopCommitter:
				return
			}
		}
		held = s.runBatch(append(held, s.q.take(maxBatch-len(held))...))
	}
}

// runBatch plans reqs in order, commits the longest prefix whose ops do not
// overlap, and returns the rest, which go first into the next batch.
func (s *Store) runBatch(reqs []*request) (held []*request) {
	keys := newBatchKeys()
	var batch []*request
	i := 0
	for ; i < len(reqs); i++ {
		r := reqs[i]
		if !keys.admits(r.op.footprint()) {
			break
		}
		if err := s.failure(); err != nil {
			r.done <- err
			continue
		}
		writes, err := r.op.plan(s)
		if err != nil || !writes {
			r.done <- err
			continue
		}
		if !keys.admits(r.op.footprint()) { // a registration that turned out to create its VIP
			break
		}
		keys.add(r.op.footprint())
		batch = append(batch, r)
	}
	s.commit(batch)
	return reqs[i:]
}

// commit writes a batch in one transaction, applies it to memory and
// answers its requests.
func (s *Store) commit(batch []*request) {
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	err := s.safely(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			if s.beforeCommit != nil {
				if err := s.beforeCommit(len(batch)); err != nil {
					return err
				}
			}
			for _, r := range batch {
				if err := r.op.write(tx); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		s.log.Error("write not committed", "writes", len(batch), "error", err)
		for _, r := range batch {
			r.done <- fmt.Errorf("embedded: commit %d write(s) to %s: %w", len(batch), s.path, err)
		}
		return
	}
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	s.metrics.writesPerCommit.Observe(float64(len(batch)))
	s.mu.Lock()
	for _, r := range batch {
		r.op.apply(s)
	}
	s.updateGauges()
	s.mu.Unlock()
	for _, r := range batch {
		r.done <- nil
	}
}

// safely runs fn under guard. A panic or memory fault inside it (bbolt
// panics on pages it cannot make sense of; a file truncated under it
// faults) becomes an error and marks the store failed: bbolt's own state is
// then unknown, so the store writes nothing more and every write answers
// ErrUnavailable until meshd is restarted and checks the file again.
func (s *Store) safely(fn func() error) error {
	err := guard(fn)
	var p *storagePanic
	if !errors.As(err, &p) {
		return err
	}
	failed := fmt.Errorf("storage failed (%v); restart meshd, which checks %s before using it: %w",
		p.value, s.path, registry.ErrUnavailable)
	s.failMu.Lock()
	s.failed = failed
	s.failMu.Unlock()
	s.metrics.storageFailures.Inc()
	s.log.Error("storage failed; refusing further writes", "path", s.path, "panic", p.value, "stack", string(p.stack))
	return failed
}

// failure returns the error that failed the store, or nil.
func (s *Store) failure() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failed
}
