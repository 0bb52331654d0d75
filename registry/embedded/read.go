package embedded

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Reads are served from memory and never touch the disk. Values in memory
// are never handed out: every read returns a copy.

// GetVIP returns a VIP; ErrNotFound if it does not exist.
func (s *Store) GetVIP(_ context.Context, name string) (registry.VIP, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs, ok := s.vips[name]
	if !ok {
		return registry.VIP{}, fmt.Errorf("embedded: vip %q: %w", name, registry.ErrNotFound)
	}
	return cloneVIP(vs.vip), nil
}

// ListVIPs returns every VIP sorted by name.
func (s *Store) ListVIPs(context.Context) ([]registry.VIP, error) {
	s.mu.RLock()
	out := make([]registry.VIP, 0, len(s.vips))
	for _, vs := range s.vips {
		out = append(out, cloneVIP(vs.vip))
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b registry.VIP) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Instances returns a VIP's instances sorted by id; ErrNotFound if the VIP
// does not exist.
func (s *Store) Instances(_ context.Context, vip string) ([]registry.Instance, error) {
	s.mu.RLock()
	vs, ok := s.vips[vip]
	if !ok {
		s.mu.RUnlock()
		return nil, fmt.Errorf("embedded: instances of %q: %w", vip, registry.ErrNotFound)
	}
	out := instancesOf(vs)
	s.mu.RUnlock()
	sortInstances(out)
	return out, nil
}

// Leases returns the state of each of a VIP's instances' leases, by id;
// nil if the VIP does not exist.
func (s *Store) Leases(vip string) map[string]registry.Lease {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs, ok := s.vips[vip]
	if !ok {
		return nil
	}
	out := make(map[string]registry.Lease, len(vs.instances))
	for id, inst := range vs.instances {
		out[id] = s.leaseLocked(instanceRef{vip, id}, inst, now)
	}
	return out
}

// Lookup returns a VIP and its instances sorted by id; ErrNotFound if the
// VIP does not exist.
func (s *Store) Lookup(_ context.Context, vip string) (registry.Service, error) {
	s.mu.RLock()
	vs, ok := s.vips[vip]
	if !ok {
		s.mu.RUnlock()
		return registry.Service{}, fmt.Errorf("embedded: lookup %q: %w", vip, registry.ErrNotFound)
	}
	svc := registry.Service{VIP: cloneVIP(vs.vip), Instances: instancesOf(vs)}
	s.mu.RUnlock()
	sortInstances(svc.Instances)
	return svc, nil
}

// instancesOf copies a VIP's instances; the caller holds mu.
func instancesOf(vs *vipState) []registry.Instance {
	out := make([]registry.Instance, 0, len(vs.instances))
	for _, inst := range vs.instances {
		out = append(out, cloneInstance(inst))
	}
	return out
}

func sortInstances(insts []registry.Instance) {
	slices.SortFunc(insts, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) })
}

// cloneVIP deep-copies a VIP so that callers and the store share nothing.
func cloneVIP(v registry.VIP) registry.VIP {
	v.Policy = v.Policy.Clone()
	return v
}

// cloneInstance deep-copies an instance.
func cloneInstance(i registry.Instance) registry.Instance {
	if i.Metadata != nil {
		m := make(map[string]string, len(i.Metadata))
		for k, v := range i.Metadata {
			m[k] = v
		}
		i.Metadata = m
	}
	return i
}
