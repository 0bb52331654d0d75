package embedded

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// instanceRef names one instance.
type instanceRef struct{ vip, id string }

// Heartbeat renews an instance's lease. It is kept in memory only, never
// waits for the disk and notifies no watcher: nothing a proxy sees changes.
// ErrNotFound tells the client to register again.
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
	delete(s.restored, instanceRef{vip, id})
	return nil
}

// expired reports whether inst's lease has run out at now.
func expired(inst registry.Instance, now time.Time) bool {
	return now.After(deadline(inst))
}

// deadline is when inst's lease runs out unless it is renewed.
func deadline(inst registry.Instance) time.Time { return inst.RenewedAt.Add(inst.TTL.D()) }

// No lease runs out before s.nextDue (nil when not known, as after Open;
// a time.Time, so that it compares as expired does, on the monotonic
// clock when both times have it): a pass over the leases finds the
// earliest deadline, a stored instance (putInstanceLocked) lowers it, and
// a heartbeat, which only moves a deadline later, leaves it. Until then a
// sweep has nothing to look at, so a fleet whose heartbeats keep ahead of
// its leases is looked at in full about once per TTL minus heartbeat
// interval, not at every sweep. A full pass over 30,000 instances takes
// 10-30 ms on a 2-core machine, holding mu and the committer
// (BenchmarkSweep, BENCHMARKS.md).

// lowerNextDue makes s.nextDue no later than d; the caller holds mu.
func (s *Store) lowerNextDue(d time.Time) {
	for {
		old := s.nextDue.Load()
		if old == nil || !d.Before(*old) {
			return
		}
		if s.nextDue.CompareAndSwap(old, &d) {
			return
		}
	}
}

// leaseLocked is the state of one instance's lease; the caller holds mu.
func (s *Store) leaseLocked(ref instanceRef, inst registry.Instance, now time.Time) registry.Lease {
	switch {
	case expired(inst, now):
		return registry.LeaseOverdue
	case s.restored[ref]:
		return registry.LeaseGrace
	}
	return registry.LeaseOK
}

// leasesLocked lists the overdue instances and counts the renewing fleet's
// leases; the caller holds mu. Expired is left to the caller.
func (s *Store) leasesLocked(now time.Time) ([]instanceRef, registry.LeaseCounts) {
	var overdue []instanceRef
	c := registry.LeaseCounts{Renewing: s.total - len(s.restored)}
	if next := s.nextDue.Load(); next != nil && !now.After(*next) {
		return nil, c
	}
	earliest := farFuture
	for name, vs := range s.vips {
		for id, inst := range vs.instances {
			if d := deadline(inst); d.Before(earliest) {
				earliest = d
			}
			if !expired(inst, now) {
				continue
			}
			ref := instanceRef{name, id}
			overdue = append(overdue, ref)
			if !s.restored[ref] {
				c.Overdue++
			}
		}
	}
	// Readers hold mu too, but each stores what the same state gives, and
	// a writer (lowerNextDue) waits for them.
	s.nextDue.Store(&earliest)
	return overdue, c
}

// farFuture is the earliest deadline of no lease at all.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Sweep runs one expiry pass now, applying the self-preservation rule (see
// registry.SelfPreservation and the package comment), and then notifies the
// watchers of every VIP that lost an instance. The sweeper goroutine calls
// it every Options.SweepInterval. A store that failed (see commit.go)
// sweeps no more: it could not persist an expiry, and says so once.
func (s *Store) Sweep() {
	if s.failure() != nil {
		return
	}
	o := &sweepOp{}
	if err := s.submit(o); err != nil {
		s.log.Error("lease expiry not persisted; retrying on the next sweep", "error", err)
		return
	}
	s.notify(o.changed...)
}

// sweepOp expires every overdue instance, unless self-preservation is
// engaged. It runs alone in its batch, so it sees every earlier write.
type sweepOp struct {
	now     time.Time
	expire  []instanceRef
	changed []string
}

func (o *sweepOp) footprint() footprint { return footprint{exclusive: true} }

func (o *sweepOp) plan(s *Store) (bool, error) {
	o.now = s.now()
	cutoff := o.now.Add(-registry.SelfPreservationWindow)
	s.recent = slices.DeleteFunc(s.recent, func(t time.Time) bool { return t.Before(cutoff) })
	s.mu.RLock()
	overdue, c := s.leasesLocked(o.now)
	s.mu.RUnlock()
	c.Expired = len(s.recent)
	s.metrics.overdue.Set(float64(len(overdue)))
	engaged := s.preservation.Engaged(c)
	s.setPreserving(engaged, c)
	if engaged || len(overdue) == 0 {
		return false, nil
	}
	o.expire = overdue
	return true, nil
}

func (o *sweepOp) write(tx *bolt.Tx) error {
	b := tx.Bucket(bucketInstances)
	for _, r := range o.expire {
		if err := b.Delete(instanceKey(r.vip, r.id)); err != nil {
			return err
		}
	}
	return nil
}

// apply removes the expired instances from memory. A heartbeat that arrived
// during the commit loses: the instance is gone from disk, so it goes from
// memory too, and its next heartbeat gets ErrNotFound and registers again.
func (o *sweepOp) apply(s *Store) {
	for _, r := range o.expire {
		inst := s.vips[r.vip].instances[r.id]
		s.log.Info("lease expired", "vip", r.vip, "instance_id", r.id, "renewed_at", inst.RenewedAt,
			"renewed_since_start", !s.restored[r])
		if !s.restored[r] {
			s.recent = append(s.recent, o.now)
		}
		s.removeInstanceLocked(r)
		if !slices.Contains(o.changed, r.vip) {
			o.changed = append(o.changed, r.vip)
		}
	}
	s.metrics.expirations.Add(float64(len(o.expire)))
	s.metrics.overdue.Set(0)
}

// setPreserving records whether the store is in self-preservation, logging
// the transitions; only the committer calls it.
func (s *Store) setPreserving(on bool, c registry.LeaseCounts) {
	s.mu.Lock()
	was := s.preserving
	s.preserving = on
	s.mu.Unlock()
	s.preservation.Report(s.log, s.metrics.selfPreservation, was, on, c)
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
