package embedded

import (
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
	ws, ok := s.watchers[vip]
	if !ok {
		ws = make(map[*watcher]struct{})
		s.watchers[vip] = ws
		s.watchers = shrink.Map(s.watchers, &s.watchersPeak)
	}
	ws[w] = struct{}{}
	s.watchMu.Unlock()
	return func() {
		if w.stopped.Swap(true) {
			return
		}
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		delete(s.watchers[vip], w)
		if len(s.watchers[vip]) == 0 {
			delete(s.watchers, vip)
			s.watchers = shrink.Map(s.watchers, &s.watchersPeak)
		}
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
		for w := range s.watchers[vip] {
			fire = append(fire, w)
		}
	}
	s.watchMu.Unlock()
	for _, w := range fire {
		if !w.stopped.Load() {
			w.changed()
		}
	}
}
