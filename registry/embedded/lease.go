package embedded

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// instanceRef names one instance.
type instanceRef struct{ vip, id string }

// Heartbeat renews an instance's lease. It is kept in memory only and
// notifies no watcher: nothing a proxy sees changes. ErrNotFound tells the
// client to register again.
func (s *Store) Heartbeat(_ context.Context, vip, id string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	vs, ok := s.vips[vip]
	if !ok {
		return fmt.Errorf("embedded: heartbeat %s/%s: vip %w", vip, id, registry.ErrNotFound)
	}
	inst, ok := vs.instances[id]
	if !ok {
		return fmt.Errorf("embedded: heartbeat %s/%s: instance %w", vip, id, registry.ErrNotFound)
	}
	inst.RenewedAt = now
	vs.instances[id] = inst
	return nil
}

// expired reports whether inst's lease has run out at now.
func expired(inst registry.Instance, now time.Time) bool {
	return now.After(inst.RenewedAt.Add(inst.TTL.D()))
}

// overdueLocked lists the instances whose lease has run out; the caller holds mu.
func (s *Store) overdueLocked(now time.Time) []instanceRef {
	var out []instanceRef
	for name, vs := range s.vips {
		for id, inst := range vs.instances {
			if expired(inst, now) {
				out = append(out, instanceRef{vip: name, id: id})
			}
		}
	}
	return out
}

// Sweep runs one expiry pass now, applying the self-preservation rule of the
// package comment, and then notifies the watchers of every VIP that lost an
// instance. The sweeper goroutine calls it every Options.SweepInterval.
func (s *Store) Sweep() {
	s.notify(s.sweep()...)
}

// sweep expires what the self-preservation rule allows and returns the
// names of the VIPs that changed.
func (s *Store) sweep() []string {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.now()
	s.mu.RLock()
	overdue := s.overdueLocked(now)
	total := s.total
	s.mu.RUnlock()

	// Forget expiries older than one default lease.
	cutoff := now.Add(-registry.DefaultTTL.D())
	s.recent = slices.DeleteFunc(s.recent, func(t time.Time) bool { return t.Before(cutoff) })
	recent := len(s.recent)
	// The epsilon keeps float rounding (0.15×20 = 3.0000000000000004 or
	// 2.9999999999999996) from moving the limit.
	limit := max(1, int(math.Floor(s.share*float64(total+recent)+1e-9)))
	if len(overdue) > 0 && len(overdue)+recent > limit {
		s.setPreserving(true, len(overdue), recent, limit)
		return nil
	}
	s.setPreserving(false, len(overdue), recent, limit)
	if len(overdue) == 0 {
		return nil
	}

	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range overdue {
			if err := deleteInstance(tx, r.vip, r.id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("lease expiry not persisted; retrying on the next sweep", "instances", len(overdue), "error", err)
		return nil
	}
	// A heartbeat that arrived during the commit loses: the instance is gone
	// from disk, so it goes from memory too, and its next heartbeat gets
	// ErrNotFound and registers again.
	var changed []string
	s.mu.Lock()
	for _, r := range overdue {
		vs := s.vips[r.vip]
		s.log.Info("lease expired", "vip", r.vip, "instance_id", r.id, "renewed_at", vs.instances[r.id].RenewedAt)
		s.removeInstanceLocked(vs, r.id)
		if !slices.Contains(changed, r.vip) {
			changed = append(changed, r.vip)
		}
		s.recent = append(s.recent, now)
	}
	s.updateGauges()
	s.mu.Unlock()
	s.metrics.expirations.Add(float64(len(overdue)))
	return changed
}

// setPreserving records whether the store is in self-preservation, logging
// the transitions; the caller holds writeMu.
func (s *Store) setPreserving(on bool, overdue, recent, limit int) {
	s.mu.Lock()
	was := s.preserving
	s.preserving = on
	s.mu.Unlock()
	switch {
	case on && !was:
		s.metrics.selfPreservation.Set(1)
		s.log.Warn("self-preservation on: too many leases expired at once, expiring none until heartbeats resume",
			"overdue", overdue, "recently_expired", recent, "limit", limit)
	case !on && was:
		s.metrics.selfPreservation.Set(0)
		s.log.Info("self-preservation off: lease expiry resumed", "overdue", overdue)
	}
}

// sweepEvery calls Sweep every interval until Close.
func (s *Store) sweepEvery(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}
