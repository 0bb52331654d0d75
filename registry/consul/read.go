package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// vipState is what Consul says about one VIP: its health entries mapped to
// instances, and its KV policy.
type vipState struct {
	// hasService: Consul has at least one instance of the service, routable or not.
	hasService bool
	instances  []registry.Instance
	// leases are the lease checks of the instances registered through
	// meshd, by id (see leases).
	leases map[string]leaseCheck
	// policy is nil when the KV key does not exist.
	policy *registry.Policy
	// policyErr is set when the KV value is not a valid policy.
	policyErr error
}

func (st vipState) exists() bool { return st.hasService || st.policy != nil || st.policyErr != nil }

// service returns the VIP as discovery sees it, with the instances whose
// lease is held served as such; ErrNotFound if it does not exist.
func (s *Store) service(vip string, st vipState) (registry.Service, error) {
	switch {
	case st.policyErr != nil:
		return registry.Service{}, st.policyErr
	case !st.exists():
		return registry.Service{}, fmt.Errorf("consul: lookup %q: %w", vip, registry.ErrNotFound)
	}
	insts := s.leases.serve(vip, cloneInstances(st.instances), st.leases)
	return registry.Service{VIP: st.vip(vip), Instances: insts}, nil
}

// vip returns the VIP with its policy, or the default policy when it has none in KV.
func (st vipState) vip(name string) registry.VIP {
	if st.policy == nil {
		return registry.VIP{Name: name, Policy: registry.Policy{}.Normalize()}
	}
	return registry.VIP{Name: name, Policy: st.policy.Clone()}
}

// Lookup returns a VIP and its instances sorted by id; ErrNotFound if
// Consul has neither its policy nor an instance of it. A watched VIP is
// served from its watch's last result when both its queries are current
// (waiting for the first answers of a watch that has just started), and
// fails with registry.ErrUnavailable while a watch that was current
// catches up after an error: only the watch knows what was served, so only
// it may say what comes next (see follow). Any other Lookup is one round of
// queries (health and KV, in parallel). While the store is degraded it
// fails at once with registry.ErrUnavailable.
func (s *Store) Lookup(ctx context.Context, vip string) (registry.Service, error) {
	degraded := s.Degraded()
	st, current, known := s.watched(ctx, vip, !degraded)
	switch {
	case current:
		s.metrics.lookups.WithLabelValues(sourceWatch).Inc()
		return s.service(vip, st)
	case degraded || known:
		s.metrics.lookups.WithLabelValues(sourceFailFast).Inc()
		return registry.Service{}, fmt.Errorf("consul: lookup %q: %w: consul at %s did not answer recently; retrying in the background",
			vip, registry.ErrUnavailable, s.opts.Address)
	}
	s.metrics.lookups.WithLabelValues(sourceQuery).Inc()
	st, err := s.read(ctx, opLookup, vip)
	if err != nil {
		return registry.Service{}, err
	}
	return s.service(vip, st)
}

// read queries a VIP's health entries and KV policy in parallel; for a
// write (op opWrite) without stale reads.
func (s *Store) read(ctx context.Context, op, vip string) (vipState, error) {
	var (
		st     vipState
		kvErr  error
		policy *capi.KVPair
		done   = make(chan struct{})
	)
	options := s.queryOptions
	if op == opWrite {
		options = s.consistentOptions
	}
	go func() {
		defer close(done)
		kvErr = s.call(ctx, op, func(ctx context.Context) error {
			var err error
			policy, _, err = s.client.KV().Get(s.key(vip), options(ctx))
			return err
		})
	}()
	var entries []*capi.ServiceEntry
	err := s.call(ctx, op, func(ctx context.Context) error {
		var err error
		entries, _, err = s.client.Health().Service(vip, "", false, options(ctx))
		return err
	})
	<-done
	if err != nil {
		return vipState{}, wrap(err, "list instances of %q", vip)
	}
	if kvErr != nil {
		return vipState{}, wrap(kvErr, "read policy of %q at %s", vip, s.key(vip))
	}
	st.hasService = len(entries) > 0
	st.instances, st.leases = s.instancesOf(vip, entries)
	st.policy, st.policyErr = s.decodePolicy(vip, policy)
	return st, nil
}

// decodePolicy decodes a KV value written by PutVIP (or by hand). A value
// that is not a valid policy is an error for this VIP only: discovery keeps
// its last known state and logs it.
func (s *Store) decodePolicy(vip string, kv *capi.KVPair) (*registry.Policy, error) {
	if kv == nil {
		return nil, nil
	}
	var p registry.Policy
	dec := json.NewDecoder(bytes.NewReader(kv.Value))
	dec.DisallowUnknownFields()
	err := dec.Decode(&p)
	if err == nil {
		err = p.Validate()
	}
	if errors.Is(err, registry.ErrNoHashKey) {
		err = nil // stored before hash_on existed: Normalize gives it one
	}
	if err != nil {
		return nil, fmt.Errorf("consul: policy of %q at %s is not valid (%w); write it again with PUT /v1/vips/%s",
			vip, kv.Key, err, vip)
	}
	p = p.Normalize()
	return &p, nil
}

// GetVIP returns a VIP; ErrNotFound if it does not exist.
func (s *Store) GetVIP(ctx context.Context, name string) (registry.VIP, error) {
	st, err := s.read(ctx, opRead, name)
	switch {
	case err != nil:
		return registry.VIP{}, err
	case st.policyErr != nil:
		return registry.VIP{}, st.policyErr
	case !st.exists():
		return registry.VIP{}, fmt.Errorf("consul: vip %q: %w", name, registry.ErrNotFound)
	}
	return st.vip(name), nil
}

// Instances returns a VIP's instances sorted by id, with the status
// proxies are served (an instance whose lease is held keeps its status);
// ErrNotFound if the VIP does not exist.
func (s *Store) Instances(ctx context.Context, vip string) ([]registry.Instance, error) {
	st, err := s.read(ctx, opRead, vip)
	if err != nil {
		return nil, err
	}
	if !st.exists() {
		return nil, fmt.Errorf("consul: instances of %q: %w", vip, registry.ErrNotFound)
	}
	return s.leases.serve(vip, st.instances, st.leases), nil
}

// Leases returns the lease state of a VIP's instances registered through
// meshd (ok, grace or overdue; see leases), by id; nil if the VIP cannot
// be read. Instances not registered through meshd hold no lease.
func (s *Store) Leases(vip string) map[string]registry.Lease {
	st, current, _ := s.watched(s.ctx, vip, false)
	if !current {
		var err error
		if st, err = s.read(s.ctx, opRead, vip); err != nil {
			return nil
		}
	}
	return s.leases.leasesOf(vip, st.leases, s.outage(), s.opts.Now())
}

// ListVIPs returns every VIP sorted by name: the policies under the KV
// prefix and the catalog's services whose names are VIP names. It lists
// the world, for the REST API and debug pages only.
func (s *Store) ListVIPs(ctx context.Context) ([]registry.VIP, error) {
	var pairs capi.KVPairs
	err := s.call(ctx, opRead, func(ctx context.Context) error {
		var err error
		pairs, _, err = s.client.KV().List(s.opts.KVPrefix+"/", s.queryOptions(ctx))
		return err
	})
	if err != nil {
		return nil, wrap(err, "list policies under %s/", s.opts.KVPrefix)
	}
	var services map[string][]string
	err = s.call(ctx, opRead, func(ctx context.Context) error {
		var err error
		services, _, err = s.client.Catalog().Services(s.queryOptions(ctx))
		return err
	})
	if err != nil {
		return nil, wrap(err, "list services")
	}
	byName := make(map[string]registry.VIP, len(pairs)+len(services))
	for _, kv := range pairs {
		name := strings.TrimPrefix(kv.Key, s.opts.KVPrefix+"/")
		if names.ValidateVIP(name) != nil {
			continue
		}
		p, err := s.decodePolicy(name, kv)
		if err != nil {
			s.log.Warn("vip listed with the default policy: its stored policy is not valid", "vip", name, "error", err)
			p = nil
		}
		byName[name] = vipState{policy: p}.vip(name)
	}
	for name := range services {
		if _, ok := byName[name]; !ok && names.ValidateVIP(name) == nil {
			byName[name] = vipState{}.vip(name)
		}
	}
	out := make([]registry.VIP, 0, len(byName))
	for _, v := range byName {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b registry.VIP) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// cloneInstances deep-copies instances.
func cloneInstances(in []registry.Instance) []registry.Instance {
	out := make([]registry.Instance, len(in))
	for i, inst := range in {
		if inst.Metadata != nil {
			md := make(map[string]string, len(inst.Metadata))
			for k, v := range inst.Metadata {
				md[k] = v
			}
			inst.Metadata = md
		}
		out[i] = inst
	}
	return out
}
