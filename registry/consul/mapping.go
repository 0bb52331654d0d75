package consul

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Service meta keys the mesh reads (and writes, for instances registered
// through meshd). Consul meta keys allow letters, digits, '-' and '_'; the
// "xspace-" prefix is reserved for these, and Consul reserves "consul-".
const (
	// MetaInstanceID is the mesh's instance id. Instances registered
	// through meshd carry it; for others the id is "<node>:<service id>".
	MetaInstanceID = "xspace-instance-id"
	// MetaSecurePort is the port of the instance's mutual-TLS listener.
	MetaSecurePort = "xspace-secure-port"
	// MetaZone is the instance's zone (Envoy locality).
	MetaZone = "xspace-zone"
	// MetaStatus is a status set through the REST API (STARTING, DOWN,
	// DRAINING); OUT_OF_SERVICE is Consul's maintenance mode instead.
	MetaStatus = "xspace-status"
	// MetaTTL is the heartbeat TTL an instance registered through meshd asked for.
	MetaTTL = "xspace-ttl"
	// MetaRegisteredAt is when meshd last registered the instance (RFC 3339).
	MetaRegisteredAt = "xspace-registered-at"

	metaPrefix     = "xspace-"
	consulReserved = "consul-"
)

// metaKey is what Consul accepts as a service meta key.
var metaKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// instanceOf maps one Consul health entry to an instance, and reports false
// for entries Envoy could not route to (an address that is not an IP, port 0).
//
// Status, first rule that applies:
//  1. a maintenance check (service or node) → OUT_OF_SERVICE
//  2. any critical check → DOWN
//  3. MetaStatus holds a valid status → that status
//  4. any warning check → UP if warningIsUp, else DOWN
//  5. otherwise (all passing, or no checks) → UP
func instanceOf(e *capi.ServiceEntry, vip string, warningIsUp bool) (registry.Instance, bool) {
	svc := e.Service
	addr := svc.Address
	if addr == "" && e.Node != nil {
		addr = e.Node.Address
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" || svc.Port <= 0 || svc.Port > 65535 {
		return registry.Instance{}, false
	}
	inst := registry.Instance{
		ID:       instanceID(e),
		VIP:      vip,
		Address:  ip.String(),
		Port:     uint32(svc.Port),
		Zone:     svc.Meta[MetaZone],
		Weight:   uint32(min(max(svc.Weights.Passing, 1), registry.MaxWeight)),
		Status:   statusOf(e.Checks, svc.Meta[MetaStatus], warningIsUp),
		Metadata: userMeta(svc.Meta),
	}
	if p, err := strconv.ParseUint(svc.Meta[MetaSecurePort], 10, 16); err == nil && p > 0 {
		inst.SecurePort = uint32(p)
	}
	if ttl, err := time.ParseDuration(svc.Meta[MetaTTL]); err == nil && ttl > 0 {
		inst.TTL = registry.Duration(ttl)
	}
	if at, err := time.Parse(time.RFC3339, svc.Meta[MetaRegisteredAt]); err == nil {
		inst.RegisteredAt = at
	}
	return inst, true
}

// instanceID is the mesh's id of a Consul service instance.
func instanceID(e *capi.ServiceEntry) string {
	if id := e.Service.Meta[MetaInstanceID]; id != "" {
		return id
	}
	node := ""
	if e.Node != nil {
		node = e.Node.Node
	}
	return node + ":" + e.Service.ID
}

// statusOf applies the status rules of instanceOf.
func statusOf(checks capi.HealthChecks, meta string, warningIsUp bool) registry.Status {
	var critical, warning bool
	for _, c := range checks {
		if c.CheckID == capi.NodeMaint || strings.HasPrefix(c.CheckID, capi.ServiceMaintPrefix) {
			return registry.StatusOutOfService
		}
		switch c.Status {
		case capi.HealthCritical:
			critical = true
		case capi.HealthWarning:
			warning = true
		}
	}
	switch {
	case critical:
		return registry.StatusDown
	case meta != "" && registry.ValidateStatus(registry.Status(meta)) == nil:
		return registry.Status(meta)
	case warning && !warningIsUp:
		return registry.StatusDown
	}
	return registry.StatusUp
}

// userMeta returns a service's meta without the mesh's own keys.
func userMeta(meta map[string]string) map[string]string {
	var out map[string]string
	for k, v := range meta {
		if strings.HasPrefix(k, metaPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(meta))
		}
		out[k] = v
	}
	return out
}

// instancesOf maps a VIP's health entries to instances sorted by id, and
// the lease checks of those registered through meshd by id. When several
// entries map to one id (an instance re-registered through another agent,
// whose old registration has not been reaped yet), the one with the best
// status wins, then the lowest node name, so every replica picks the same.
func (s *Store) instancesOf(vip string, entries []*capi.ServiceEntry) ([]registry.Instance, map[string]leaseCheck) {
	type candidate struct {
		inst     registry.Instance
		node     string
		lease    leaseCheck
		hasLease bool
	}
	byID := make(map[string]candidate, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		inst, ok := instanceOf(e, vip, s.opts.WarningIsUp)
		if !ok {
			s.metrics.skipped.Inc()
			continue
		}
		c := candidate{inst: inst}
		c.lease, c.hasLease = leaseOf(e, inst, s.opts.WarningIsUp)
		if e.Node != nil {
			c.node = e.Node.Node
		}
		if old, dup := byID[inst.ID]; dup {
			if r := cmp.Or(cmp.Compare(statusRank(old.inst.Status), statusRank(inst.Status)), strings.Compare(old.node, c.node)); r <= 0 {
				continue
			}
		}
		byID[inst.ID] = c
	}
	out := make([]registry.Instance, 0, len(byID))
	var leases map[string]leaseCheck
	for id, c := range byID {
		out = append(out, c.inst)
		if c.hasLease {
			if leases == nil {
				leases = make(map[string]leaseCheck)
			}
			leases[id] = c.lease
		}
	}
	slices.SortFunc(out, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) })
	return out, leases
}

// leaseCheck is the lease of an instance registered through meshd: its TTL check.
type leaseCheck struct {
	ttl      time.Duration
	critical bool
	// held is the instance's status while its lease is held (see leases):
	// what its other checks and meta say.
	held registry.Status
}

// leaseOf returns the lease of an instance registered through meshd, which
// carries the TTL check heartbeats renew; false for any other instance.
func leaseOf(e *capi.ServiceEntry, inst registry.Instance, warningIsUp bool) (leaseCheck, bool) {
	id := ttlCheckID(e.Service.ID)
	others := make(capi.HealthChecks, 0, len(e.Checks))
	var ttl *capi.HealthCheck
	for _, c := range e.Checks {
		if c.CheckID == id {
			ttl = c
			continue
		}
		others = append(others, c)
	}
	if ttl == nil {
		return leaseCheck{}, false
	}
	l := leaseCheck{ttl: inst.TTL.D(), critical: ttl.Status == capi.HealthCritical, held: inst.Status}
	if l.ttl <= 0 {
		l.ttl = registry.DefaultTTL.D()
	}
	if l.critical {
		l.held = statusOf(others, e.Service.Meta[MetaStatus], warningIsUp)
	}
	return l, true
}

// statusRank orders statuses from most to least alive.
func statusRank(s registry.Status) int {
	return slices.Index([]registry.Status{
		registry.StatusUp, registry.StatusDraining, registry.StatusStarting,
		registry.StatusOutOfService, registry.StatusDown,
	}, s)
}

// serviceID is the Consul service id of an instance registered through
// meshd. A VIP name has no ':', so the first ':' splits it unambiguously.
func serviceID(vip, id string) string { return vip + ":" + id }

// ttlCheckID is the id of the TTL check that heartbeats renew.
func ttlCheckID(sid string) string { return "xspace-ttl:" + sid }

// registration is what meshd registers with its Consul agent for a
// normalized instance: the status goes to MetaStatus unless it is UP (no
// key) or OUT_OF_SERVICE (maintenance mode, set by the caller afterwards).
// checkStatus is the TTL check's initial status.
func (s *Store) registration(inst registry.Instance, checkStatus string) *capi.AgentServiceRegistration {
	meta := make(map[string]string, len(inst.Metadata)+5)
	for k, v := range inst.Metadata {
		meta[k] = v
	}
	meta[MetaInstanceID] = inst.ID
	meta[MetaTTL] = inst.TTL.D().String()
	if inst.Zone != "" {
		meta[MetaZone] = inst.Zone
	}
	if inst.SecurePort != 0 {
		meta[MetaSecurePort] = strconv.FormatUint(uint64(inst.SecurePort), 10)
	}
	if inst.Status != registry.StatusUp && inst.Status != registry.StatusOutOfService {
		meta[MetaStatus] = string(inst.Status)
	}
	sid := serviceID(inst.VIP, inst.ID)
	return &capi.AgentServiceRegistration{
		ID:      sid,
		Name:    inst.VIP,
		Address: inst.Address,
		Port:    int(inst.Port),
		Meta:    meta,
		Weights: &capi.AgentWeights{Passing: int(inst.Weight), Warning: int(inst.Weight)},
		Check: &capi.AgentServiceCheck{
			CheckID:                        ttlCheckID(sid),
			Name:                           "xspace heartbeat",
			Notes:                          "renewed by heartbeats to meshd (PUT /v1/vips/" + inst.VIP + "/instances/" + inst.ID + "/heartbeat)",
			TTL:                            inst.TTL.D().String(),
			Status:                         checkStatus,
			DeregisterCriticalServiceAfter: s.opts.DeregisterCriticalAfter.String(),
		},
	}
}

// validMeta checks that an instance's metadata can be Consul service meta.
func validMeta(md map[string]string) error {
	for k := range md {
		if !metaKey.MatchString(k) || strings.HasPrefix(k, metaPrefix) || strings.HasPrefix(k, consulReserved) {
			return &registry.ValidationError{Field: "metadata", Message: fmt.Sprintf(
				"key %q cannot be Consul service meta; use up to 128 letters, digits, '-' or '_', not starting with %q or %q",
				k, metaPrefix, consulReserved)}
		}
	}
	return nil
}
