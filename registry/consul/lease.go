package consul

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// An instance registered through meshd holds a lease: its TTL check, which
// heartbeats renew. Consul turns the check critical when the TTL passes,
// and the mapping makes the instance DOWN. leases decides, for the watched
// VIPs, when a critical TTL check really takes an instance out of what
// proxies are served, with the embedded registry's rules:
//
//   - renewing: an instance whose TTL check this store has seen passing
//     (since it started, or since the instance last expired). Only these
//     count, and only these are ever held: an instance first seen critical
//     was never served.
//   - grace: a renewing instance whose TTL check is critical while Consul
//     is unreachable, or within the instance's TTL after an outage ended.
//     Heartbeats could not reach Consul meanwhile, so its lease restarts
//     when Consul returns, as an embedded registry's leases do after a
//     restart. It is held, and not counted as overdue.
//   - overdue: a renewing instance whose TTL check is critical otherwise.
//     At each pass, registry.SelfPreservation decides over the counts of
//     every watched VIP: engaged, overdue instances are held; otherwise
//     they expire.
//   - expired: served DOWN (their critical check) until it passes again.
//
// Held instances are served with the status their other checks and meta
// give (leaseCheck.held).
type leases struct {
	rule    registry.SelfPreservation
	log     *slog.Logger
	metrics prom.LeaseMetrics

	mu      sync.Mutex
	vips    map[string]map[string]*leaseRec // watched VIP -> instance id -> lease
	recent  []time.Time                     // expiries within the window, oldest first
	engaged bool
	counts  registry.LeaseCounts // at the last pass
}

// leaseRec is what the store remembers of one instance's lease.
type leaseRec struct {
	check   leaseCheck
	seen    bool // renewing: its TTL check was seen passing
	expired bool
}

// outage is what leases need to know of Consul's reachability.
type outage struct {
	degraded bool
	ended    time.Time // when the last outage ended
}

// grace reports whether a critical TTL check of ttl is explained by an outage.
func (o outage) grace(ttl time.Duration, now time.Time) bool {
	return o.degraded || (!o.ended.IsZero() && now.Before(o.ended.Add(ttl)))
}

func newLeases(rule registry.SelfPreservation, log *slog.Logger, m prom.LeaseMetrics) *leases {
	return &leases{rule: rule, log: log, metrics: m, vips: make(map[string]map[string]*leaseRec)}
}

// observe records the lease checks of a watched VIP's latest answer, and,
// if a lease changed state, runs a pass. It returns the VIPs whose served
// instances the pass changed.
func (l *leases) observe(vip string, checks map[string]leaseCheck, o outage, now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := l.vips[vip]
	if recs == nil {
		recs = make(map[string]*leaseRec, len(checks))
		l.vips[vip] = recs
	}
	moved := false
	for id := range recs {
		if _, ok := checks[id]; !ok {
			delete(recs, id)
			moved = true
		}
	}
	for id, c := range checks {
		rec := recs[id]
		if rec == nil {
			rec = &leaseRec{}
			recs[id] = rec
			moved = true
		}
		moved = moved || rec.check.critical != c.critical
		rec.check = c
		if !c.critical {
			rec.seen, rec.expired = true, false
		}
	}
	if !moved {
		return nil
	}
	return l.passLocked(o, now)
}

// forget drops a VIP that is no longer watched.
func (l *leases) forget(vip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.vips, vip)
}

// pass applies the rule to every watched VIP's leases (on a timer: graces
// end and expiries leave the window without an answer from Consul).
func (l *leases) pass(o outage, now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.passLocked(o, now)
}

// passLocked counts, decides, and expires the overdue leases unless
// self-preservation is engaged; it returns the VIPs that lost an instance.
func (l *leases) passLocked(o outage, now time.Time) []string {
	cutoff := now.Add(-registry.SelfPreservationWindow)
	l.recent = slices.DeleteFunc(l.recent, func(t time.Time) bool { return t.Before(cutoff) })
	c := registry.LeaseCounts{Expired: len(l.recent)}
	grace := 0
	for _, recs := range l.vips {
		for _, rec := range recs {
			switch rec.state(o, now) {
			case "":
				continue
			case registry.LeaseOverdue:
				c.Overdue++
			case registry.LeaseGrace:
				grace++
			}
			c.Renewing++
		}
	}
	engaged := l.rule.Engaged(c)
	if grace > 0 && c.Overdue == 0 {
		engaged = l.engaged // an outage explains the missed leases: no new verdict
	}
	l.rule.Report(l.log, l.metrics.SelfPreservation, l.engaged, engaged, c)
	l.engaged, l.counts = engaged, c
	l.metrics.Overdue.Set(float64(c.Overdue))
	if engaged || c.Overdue == 0 {
		return nil
	}
	var changed []string
	for vip, recs := range l.vips {
		for id, rec := range recs {
			if rec.state(o, now) != registry.LeaseOverdue {
				continue
			}
			rec.expired = true
			l.recent = append(l.recent, now)
			l.metrics.Expirations.Inc()
			l.log.Info("lease expired", "vip", vip, "instance_id", id)
			if !slices.Contains(changed, vip) {
				changed = append(changed, vip)
			}
		}
	}
	l.metrics.Overdue.Set(0)
	return changed
}

// state is the lease state of a renewing instance's lease: ok, grace or
// overdue; "" for one that is not renewing (never seen passing, or expired).
func (r *leaseRec) state(o outage, now time.Time) registry.Lease {
	switch {
	case !r.seen || r.expired:
		return ""
	case !r.check.critical:
		return registry.LeaseOK
	case o.grace(r.check.ttl, now):
		return registry.LeaseGrace
	}
	return registry.LeaseOverdue
}

// serve returns a VIP's instances as proxies are served them: an instance
// whose lease is held (renewing, not expired) has the status its other
// checks give, although its TTL check is critical.
func (l *leases) serve(vip string, insts []registry.Instance, checks map[string]leaseCheck) []registry.Instance {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := l.vips[vip]
	for i, inst := range insts {
		c, ok := checks[inst.ID]
		if !ok || !c.critical {
			continue
		}
		if rec := recs[inst.ID]; rec != nil && rec.seen && !rec.expired {
			insts[i].Status = c.held
		}
	}
	return insts
}

// leasesOf returns the lease state of a VIP's instances registered through
// meshd: ok, grace, or overdue (held by self-preservation, or expired).
func (l *leases) leasesOf(vip string, checks map[string]leaseCheck, o outage, now time.Time) map[string]registry.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]registry.Lease, len(checks))
	for id, c := range checks {
		out[id] = registry.LeaseOK
		if !c.critical {
			continue
		}
		out[id] = registry.LeaseOverdue
		if rec := l.vips[vip][id]; rec != nil && rec.state(o, now) == registry.LeaseGrace {
			out[id] = registry.LeaseGrace
		}
	}
	return out
}

// status reports the last pass: whether self-preservation is engaged, and
// its counts.
func (l *leases) status() (bool, registry.LeaseCounts) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.engaged, l.counts
}
