package embedded

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// commitGate holds the store's next commit inside its transaction until
// opened, so that a test can queue writes behind it, and records how many
// writes each commit carried.
type commitGate struct {
	mu      sync.Mutex
	sizes   []int
	held    bool
	entered chan struct{}
	open    chan struct{}
	fail    func(n int) error
}

// holdNextCommit installs a gate on e's store and starts a write that the
// gate holds; it returns once that write's commit has begun.
func holdNextCommit(e *env) *commitGate {
	e.t.Helper()
	g := &commitGate{entered: make(chan struct{}), open: make(chan struct{})}
	e.s.beforeCommit = func(n int) error {
		g.mu.Lock()
		g.sizes = append(g.sizes, n)
		first := !g.held
		g.held = true
		fail := g.fail
		g.mu.Unlock()
		if first {
			close(g.entered)
			<-g.open
		}
		if fail != nil {
			return fail(n)
		}
		return nil
	}
	go func() { _, _ = e.s.PutVIP(context.Background(), registry.VIP{Name: "gate"}) }()
	<-g.entered
	return g
}

func (g *commitGate) commitSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// waitQueued waits until n writes wait for the committer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	await.NoError(t, fmt.Sprintf("%d writes queued", n), func() error {
		s.q.mu.Lock()
		got := len(s.q.pending)
		s.q.mu.Unlock()
		if got < n {
			return fmt.Errorf("%d queued", got)
		}
		return nil
	})
}

// queueInOrder starts each write on its own goroutine, waiting until it is
// queued before starting the next, and returns their errors once all ended.
func queueInOrder(t *testing.T, s *Store, writes ...func() error) func() []error {
	t.Helper()
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() { errs[i] = w() })
		waitQueued(t, s, i+1)
	}
	return func() []error { wg.Wait(); return errs }
}

// TestWritesShareCommits: writes queued behind a commit on disk share the
// next one, and every one of them is on disk when it returns.
func TestWritesShareCommits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(instance("web", 100)) // the VIP exists: no registration below creates it
	g := holdNextCommit(e)
	var writes []func() error
	for i := range 63 {
		writes = append(writes, func() error { _, err := e.s.Register(ctx, instance("web", i)); return err })
	}
	wait := queueInOrder(t, e.s, writes...)
	close(g.open)
	for i, err := range wait() {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if diff := cmp.Diff([]int{1, 63}, g.commitSizes()); diff != "" {
		t.Errorf("writes per commit (-want +got):\n%s", diff)
	}
	e.reopen()
	if got := len(e.ids("web")); got != 64 {
		t.Errorf("after reopen: %d instances, want 64", got)
	}
}

// TestOverlappingWritesCommitInOrder: writes to the same instance or VIP
// never share a commit; they are committed in the order they arrived, each
// seeing the one before. It is long because of its table.
func TestOverlappingWritesCommitInOrder(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		writes func(s *Store) []func() error
		sizes  []int
		check  func(e *env) error
	}{
		{"register then status of one instance", func(s *Store) []func() error {
			return []func() error{
				func() error { _, err := s.Register(ctx, instance("web", 1)); return err },
				func() error { _, err := s.SetStatus(ctx, "web", "web-1", registry.StatusDown); return err },
				func() error { _, err := s.Register(ctx, instance("web", 2)); return err },
			}
		}, []int{1, 1, 2}, func(e *env) error {
			insts, err := e.s.Instances(ctx, "web")
			if err != nil || len(insts) != 2 || insts[0].Status != registry.StatusDown {
				return fmt.Errorf("instances %+v, %w; want web-1 DOWN and web-2", insts, err)
			}
			return nil
		}},
		{"policy then registration of a new VIP", func(s *Store) []func() error {
			return []func() error{
				func() error {
					_, err := s.PutVIP(ctx, registry.VIP{Name: "web", Policy: registry.Policy{Protocol: registry.GRPC}})
					return err
				},
				func() error { _, err := s.Register(ctx, instance("web", 1)); return err },
				func() error { _, err := s.Register(ctx, instance("api", 1)); return err },
			}
		}, []int{1, 1, 2}, func(e *env) error {
			if v, err := e.s.GetVIP(ctx, "web"); err != nil || v.Policy.Protocol != registry.GRPC {
				return fmt.Errorf("web = %+v, %w; the registration replaced the policy put before it", v, err)
			}
			return nil
		}},
		{"deregister then delete the VIP", func(s *Store) []func() error {
			return []func() error{
				func() error { return s.Deregister(ctx, "old", "old-1") },
				func() error { return s.DeleteVIP(ctx, "old") },
			}
		}, []int{1, 1, 1}, func(e *env) error {
			if _, err := e.s.GetVIP(ctx, "old"); !errors.Is(err, registry.ErrNotFound) {
				return fmt.Errorf("GetVIP(old) after delete = %w, want ErrNotFound", err)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(instance("old", 1))
			g := holdNextCommit(e)
			wait := queueInOrder(t, e.s, tt.writes(e.s)...)
			close(g.open)
			for i, err := range wait() {
				if err != nil {
					t.Errorf("write %d: %v", i, err)
				}
			}
			if diff := cmp.Diff(tt.sizes, g.commitSizes()); diff != "" {
				t.Errorf("writes per commit (-want +got):\n%s", diff)
			}
			if err := tt.check(e); err != nil {
				t.Error(err)
			}
			e.reopen()
			if err := tt.check(e); err != nil {
				t.Errorf("after reopen: %v", err)
			}
		})
	}
}

// TestFailedCommitAcknowledgesNothing: when a commit fails, every write it
// carried gets the error, and neither memory nor disk changes.
func TestFailedCommitAcknowledgesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(instance("web", 0))
	if _, err := e.s.PutVIP(ctx, registry.VIP{Name: "gate"}); err != nil { // as the gate's own write will
		t.Fatal(err)
	}
	before := e.state()
	g := holdNextCommit(e)
	g.mu.Lock()
	g.fail = func(n int) error {
		if n == 1 {
			return nil // the gate's own write
		}
		return errDiskFull
	}
	g.mu.Unlock()
	var writes []func() error
	for i := 1; i <= 5; i++ {
		writes = append(writes, func() error { _, err := e.s.Register(ctx, instance("web", i)); return err })
	}
	writes = append(writes, func() error { return e.s.Deregister(ctx, "web", "web-0") })
	wait := queueInOrder(t, e.s, writes...)
	close(g.open)
	for i, err := range wait() {
		if !errors.Is(err, errDiskFull) {
			t.Errorf("write %d = %v, want the commit's error", i, err)
		}
	}
	e.s.beforeCommit = nil
	if diff := cmp.Diff(before, e.state()); diff != "" {
		t.Errorf("memory changed by a failed commit (-before +after):\n%s", diff)
	}
	e.reopen()
	if diff := cmp.Diff(before, e.state()); diff != "" {
		t.Errorf("disk changed by a failed commit (-before +after):\n%s", diff)
	}
}

// errDiskFull is the error a failing commit returns in these tests.
var errDiskFull = errors.New("disk full")

// TestHeartbeatsDoNotWaitForDisk: while a commit is held inside its
// transaction, heartbeats and reads are answered; only writes queue.
func TestHeartbeatsDoNotWaitForDisk(t *testing.T) {
	e := newEnv(t)
	e.register(instance("web", 1))
	g := holdNextCommit(e)
	done := make(chan error, 1)
	go func() {
		err := e.s.Heartbeat(context.Background(), "web", "web-1")
		if err == nil {
			_, err = e.s.Lookup(context.Background(), "web")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("heartbeat or read during a commit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a heartbeat waited for a commit on disk")
	}
	close(g.open)
}

// TestMoreWritesThanOneCommitCarries: writes beyond maxBatch go into the
// next commit at once, not when some later write wakes the committer.
func TestMoreWritesThanOneCommitCarries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(instance("web", 0))
	g := holdNextCommit(e)
	const n = maxBatch + 88
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		go func() { _, err := e.s.Register(ctx, instance("web", i)); errs <- err }()
	}
	waitQueued(t, e.s, n)
	close(g.open)
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("writes still waiting 30s after the gate opened; commits so far: %v", g.commitSizes())
		}
	}
	if diff := cmp.Diff([]int{1, maxBatch, 88}, g.commitSizes()); diff != "" {
		t.Errorf("writes per commit (-want +got):\n%s", diff)
	}
}
