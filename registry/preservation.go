package registry

import (
	"log/slog"
	"math"
	"time"
)

// Defaults of SelfPreservation.
const (
	DefaultSelfPreservationShare        = 0.15
	DefaultSelfPreservationMinInstances = 10
	// SelfPreservationWindow is how long an expiry counts towards the
	// threshold: deaths spread over a few sweeps add up.
	SelfPreservationWindow = time.Duration(DefaultTTL)
)

// SelfPreservation is the rule a registry that expires leases follows to
// stop expiring them, like Eureka's: when many instances stop renewing at
// once, a partition between them and the registry is likelier than a mass
// death, so none is expired until renewals come back.
//
// Only instances that have renewed (registered, or sent a heartbeat) since
// the registry started are counted. An instance restored from disk that
// never renews after a restart is therefore neither a reason to engage nor
// protected by anything but a real mass expiry among the instances known to
// be alive: a restart does not turn ordinary deaths into permanent
// self-preservation. And a fleet smaller than MinInstances never engages it:
// in 4 instances, 3 missing leases are 3 dead instances, not a partition.
//
// It is a pure value so that every registry (embedded, Consul) applies the
// same rule to its own counts.
type SelfPreservation struct {
	// Share is the part of the renewing fleet that may miss its lease within
	// SelfPreservationWindow before expiry is suspended; default 0.15.
	Share float64
	// MinInstances is the smallest renewing fleet (LeaseCounts.Fleet) in
	// which expiry is ever suspended; default 10. 1 means no minimum.
	MinInstances int
}

// DefaultSelfPreservation is the rule meshd applies unless configured otherwise.
var DefaultSelfPreservation = SelfPreservation{
	Share:        DefaultSelfPreservationShare,
	MinInstances: DefaultSelfPreservationMinInstances,
}

// LeaseCounts is what a registry counts at one expiry pass, over the
// instances that have renewed since it started.
type LeaseCounts struct {
	// Renewing is how many registered instances have renewed since start,
	// overdue ones included.
	Renewing int `json:"renewing"`
	// Overdue is how many of those have missed their lease now.
	Overdue int `json:"overdue"`
	// Expired is how many instances that had renewed since start expired
	// within the last SelfPreservationWindow.
	Expired int `json:"recently_expired"`
}

// Fleet is the renewing fleet as it was one window ago.
func (c LeaseCounts) Fleet() int { return c.Renewing + c.Expired }

// Missed is how many leases of the renewing fleet have run out within the window.
func (c LeaseCounts) Missed() int { return c.Overdue + c.Expired }

// Limit is the most missed leases the fleet may have without engaging
// self-preservation: Share of the fleet, rounded down, and at least 1, so a
// single dead instance always expires.
func (p SelfPreservation) Limit(c LeaseCounts) int {
	// The epsilon keeps float rounding (0.15×20 = 3.0000000000000004 or
	// 2.9999999999999996) from moving the limit.
	return max(1, int(math.Floor(p.Share*float64(c.Fleet())+1e-9)))
}

// Engaged reports whether expiry must be suspended: some renewing instance
// is overdue, the fleet has at least MinInstances, and more leases were
// missed than Limit allows.
func (p SelfPreservation) Engaged(c LeaseCounts) bool {
	return c.Overdue > 0 && c.Fleet() >= p.MinInstances && c.Missed() > p.Limit(c)
}

// Gauge is where Report exports its verdict (a prometheus.Gauge).
type Gauge interface{ Set(float64) }

// Report exports a pass's verdict on g and, when it differs from the
// previous one (was), logs the transition once: at Warn when expiry stops,
// at Info when it resumes.
func (p SelfPreservation) Report(log *slog.Logger, g Gauge, was, on bool, c LeaseCounts) {
	switch {
	case on && !was:
		g.Set(1)
		log.Warn("self-preservation on: too many leases of renewing instances missed at once, expiring none until heartbeats resume",
			"overdue", c.Overdue, "recently_expired", c.Expired, "renewing", c.Renewing, "limit", p.Limit(c))
	case !on && was:
		g.Set(0)
		log.Info("self-preservation off: lease expiry resumed", "overdue", c.Overdue)
	}
}
