package embedded

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// recorder is a Watch callback that calls Lookup, as discovery does, and
// records what it saw: the number of instances, or -1 if the VIP is gone.
type recorder struct {
	s    *Store
	vip  string
	mu   sync.Mutex
	seen []int
}

func (r *recorder) changed() {
	n := -1
	svc, err := r.s.Lookup(context.Background(), r.vip)
	if err == nil {
		n = len(svc.Instances)
	} else if !errors.Is(err, registry.ErrNotFound) {
		n = -2
	}
	r.mu.Lock()
	r.seen = append(r.seen, n)
	r.mu.Unlock()
}

func (r *recorder) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	web := &recorder{s: e.s, vip: "web"}
	web2 := &recorder{s: e.s, vip: "web"}
	other := &recorder{s: e.s, vip: "other"}
	stop := e.s.Watch("web", web.changed) // before the VIP exists
	stop2 := e.s.Watch("web", web2.changed)
	defer stop2()
	defer e.s.Watch("other", other.changed)()

	tests := []struct {
		name string
		do   func() error
		want []int // what the callback saw through Lookup; nil: not called
	}{
		{"put vip", func() error { _, err := e.s.PutVIP(ctx, registry.VIP{Name: "web"}); return err }, []int{0}},
		{"register", func() error { _, err := e.s.Register(ctx, instance("web", 1)); return err }, []int{1}},
		{"register second", func() error { _, err := e.s.Register(ctx, instance("web", 2)); return err }, []int{2}},
		{"heartbeat", func() error { return e.s.Heartbeat(ctx, "web", "web-1") }, nil},
		{"set status", func() error { _, err := e.s.SetStatus(ctx, "web", "web-1", registry.StatusDraining); return err }, []int{2}},
		{"deregister", func() error { return e.s.Deregister(ctx, "web", "web-1") }, []int{1}},
		{"expiry", func() error {
			e.clock.Advance(ttl + time.Second)
			e.s.Sweep()
			return nil
		}, []int{0}},
		{"sweep expiring nothing", func() error { e.s.Sweep(); return nil }, nil},
		{"failed write", func() error {
			if err := e.s.Deregister(ctx, "web", "web-9"); !errors.Is(err, registry.ErrNotFound) {
				return err
			}
			return nil
		}, nil},
		{"delete vip", func() error { return e.s.DeleteVIP(ctx, "web") }, []int{-1}},
		{"register creates vip", func() error { _, err := e.s.Register(ctx, instance("web", 3)); return err }, []int{1}},
	}
	for _, tt := range tests {
		if err := tt.do(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		for i, r := range []*recorder{web, web2} {
			if got := r.take(); !slices.Equal(got, tt.want) {
				t.Errorf("%s: watcher %d saw %v, want %v", tt.name, i+1, got, tt.want)
			}
		}
	}
	if got := other.take(); got != nil {
		t.Errorf("watcher of another VIP called: %v", got)
	}

	stop()
	stop() // idempotent
	if _, err := e.s.SetStatus(ctx, "web", "web-3", registry.StatusDown); err != nil {
		t.Fatal(err)
	}
	if got := web.take(); got != nil {
		t.Errorf("stopped watcher called: %v", got)
	}
	if got := web2.take(); !slices.Equal(got, []int{1}) {
		t.Errorf("remaining watcher saw %v after the other stopped, want [1]", got)
	}
}

// TestConcurrentUse runs every operation at once so that -race sees them
// interleave, then checks the result is what the writes add up to.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var calls sync.WaitGroup
	stop := e.s.Watch("web", func() { _, _ = e.s.Lookup(ctx, "web") })
	defer stop()
	const writers, each = 4, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				inst := instance("web", w*each+i)
				if _, err := e.s.Register(ctx, inst); err != nil {
					t.Errorf("Register: %v", err)
					return
				}
				if err := e.s.Heartbeat(ctx, "web", inst.ID); err != nil {
					t.Errorf("Heartbeat: %v", err)
				}
				if _, err := e.s.SetStatus(ctx, "web", inst.ID, registry.StatusDown); err != nil {
					t.Errorf("SetStatus: %v", err)
				}
			}
		})
	}
	calls.Go(func() {
		for range 50 {
			_, _ = e.s.Lookup(ctx, "web")
			_ = e.s.Health()
			e.s.Sweep()
			_, _ = e.s.ListVIPs(ctx)
		}
	})
	wg.Wait()
	calls.Wait()
	insts, err := e.s.Instances(ctx, "web")
	if err != nil || len(insts) != writers*each {
		t.Fatalf("Instances = %d (%v), want %d", len(insts), err, writers*each)
	}
	for _, i := range insts {
		if i.Status != registry.StatusDown {
			t.Fatalf("instance %s status %s, want DOWN", i.ID, i.Status)
		}
	}
}
