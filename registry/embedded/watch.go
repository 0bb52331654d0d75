package embedded

import (
	"slices"
	"sync/atomic"

	"github.com/prisma-systems/xspace-mesh/internal/shrink"
)

// watcher is one Watch callback.
type watcher struct {
	changed func()
	stopped atomic.Bool
}

// Watch calls changed after every committed change to the VIP or its
// instances: the VIP put or deleted, an instance registered, its status set,
// deregistered or expired. Heartbeats do not count. The VIP need not exist
// yet. changed runs on the writer's goroutine after the store's locks are
// released, so it may call Lookup; it should return quickly. stop is
// idempotent; once it returns no new call of changed starts.
func (s *Store) Watch(vip string, changed func()) (stop func()) {
	w := &watcher{changed: changed}
	s.watchMu.Lock()
	// A slice, not a set: a VIP has one watcher (discovery's) or a few,
	// and a VIP watched costs one small allocation.
	s.watchers[vip] = append(s.watchers[vip], w)
	s.watchers = shrink.Map(s.watchers, &s.watchersPeak)
	s.watchMu.Unlock()
	return func() {
		if w.stopped.Swap(true) {
			return
		}
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		ws := slices.DeleteFunc(s.watchers[vip], func(o *watcher) bool { return o == w })
		if len(ws) > 0 {
			s.watchers[vip] = ws
			return
		}
		delete(s.watchers, vip)
		s.watchers = shrink.Map(s.watchers, &s.watchersPeak)
	}
}

// notify calls the watchers of each VIP. The caller holds no store lock.
func (s *Store) notify(vips ...string) {
	if len(vips) == 0 {
		return
	}
	var fire []*watcher
	s.watchMu.Lock()
	for _, vip := range vips {
		fire = append(fire, s.watchers[vip]...)
	}
	s.watchMu.Unlock()
	for _, w := range fire {
		if !w.stopped.Load() {
			w.changed()
		}
	}
}
