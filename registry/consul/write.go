package consul

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	capi "github.com/hashicorp/consul/api"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// maintenanceReason is shown in Consul for instances set OUT_OF_SERVICE through meshd.
const maintenanceReason = "set OUT_OF_SERVICE through the xspace-mesh REST API"

// PutVIP creates or replaces a VIP's policy: normalized JSON at <KVPrefix>/<vip>.
func (s *Store) PutVIP(ctx context.Context, v registry.VIP) (registry.VIP, error) {
	if err := v.Validate(); err != nil {
		return registry.VIP{}, err
	}
	v = registry.VIP{Name: v.Name, Policy: v.Policy.Normalize().Clone()}
	b, err := json.MarshalIndent(v.Policy, "", "  ")
	if err != nil {
		return registry.VIP{}, fmt.Errorf("consul: put vip %s: encode policy: %w", v.Name, err)
	}
	err = s.call(ctx, opWrite, func(ctx context.Context) error {
		_, err := s.client.KV().Put(&capi.KVPair{Key: s.key(v.Name), Value: b}, s.writeOptions(ctx))
		return err
	})
	if err != nil {
		return registry.VIP{}, wrap(err, "put vip %s at %s", v.Name, s.key(v.Name))
	}
	s.log.Info("vip stored", "vip", v.Name, "key", s.key(v.Name))
	return registry.VIP{Name: v.Name, Policy: v.Policy.Clone()}, nil
}

// DeleteVIP removes a VIP's policy. It returns ErrConflict while Consul has
// instances of the service and ErrNotFound if the VIP does not exist.
func (s *Store) DeleteVIP(ctx context.Context, name string) error {
	st, err := s.read(ctx, opWrite, name)
	switch {
	case err != nil:
		return fmt.Errorf("consul: delete vip %s: %w", name, err)
	case st.hasService:
		return fmt.Errorf("consul: delete vip %s: %w: %d instance(s) still registered in Consul; deregister them first",
			name, registry.ErrConflict, len(st.instances))
	case !st.exists():
		return fmt.Errorf("consul: delete vip %s: %w", name, registry.ErrNotFound)
	}
	err = s.call(ctx, opWrite, func(ctx context.Context) error {
		_, err := s.client.KV().Delete(s.key(name), s.writeOptions(ctx))
		return err
	})
	if err != nil {
		return wrap(err, "delete vip %s at %s", name, s.key(name))
	}
	s.log.Info("vip deleted", "vip", name)
	return nil
}

// Register registers an instance with the Consul agent, replacing any
// earlier registration of it, with a passing TTL check that Heartbeat
// renews. A VIP without a policy gets the default one in KV (never
// overwriting one written meanwhile).
func (s *Store) Register(ctx context.Context, inst registry.Instance) (registry.Instance, error) {
	if err := inst.Validate(); err != nil {
		return registry.Instance{}, err
	}
	if err := validMeta(inst.Metadata); err != nil {
		return registry.Instance{}, err
	}
	inst = cloneInstances([]registry.Instance{inst.Normalize()})[0]
	if err := s.ensureVIP(ctx, inst.VIP); err != nil {
		return registry.Instance{}, err
	}
	inst.RegisteredAt = time.Now().UTC().Truncate(time.Second)
	reg := s.registration(inst, capi.HealthPassing)
	reg.Meta[MetaRegisteredAt] = inst.RegisteredAt.Format(time.RFC3339)
	// Replacing the checks also ends a maintenance mode of an earlier registration.
	opts := capi.ServiceRegisterOpts{ReplaceExistingChecks: true}
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		return s.client.Agent().ServiceRegisterOpts(reg, opts.WithContext(ctx))
	})
	if err != nil {
		return registry.Instance{}, wrap(err, "register %s/%s", inst.VIP, inst.ID)
	}
	if inst.Status == registry.StatusOutOfService {
		if err := s.maintenance(ctx, reg.ID, true); err != nil {
			return registry.Instance{}, fmt.Errorf("consul: register %s/%s: %w", inst.VIP, inst.ID, err)
		}
	}
	s.log.Debug("instance registered", "vip", inst.VIP, "instance_id", inst.ID, "status", inst.Status)
	return inst, nil
}

// ensureVIP writes the default policy of a VIP that has none, with a
// check-and-set that never overwrites a policy written meanwhile.
func (s *Store) ensureVIP(ctx context.Context, vip string) error {
	var kv *capi.KVPair
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		var err error
		kv, _, err = s.client.KV().Get(s.key(vip), s.consistentOptions(ctx))
		return err
	})
	if err != nil {
		return wrap(err, "read policy of %q at %s", vip, s.key(vip))
	}
	if kv != nil {
		return nil
	}
	b, err := json.MarshalIndent(registry.Policy{}.Normalize(), "", "  ")
	if err != nil {
		return fmt.Errorf("consul: create vip %s: encode policy: %w", vip, err)
	}
	var created bool
	err = s.call(ctx, opWrite, func(ctx context.Context) error {
		var err error
		created, _, err = s.client.KV().CAS(&capi.KVPair{Key: s.key(vip), Value: b, ModifyIndex: 0}, s.writeOptions(ctx))
		return err
	})
	if err != nil {
		return wrap(err, "create vip %s at %s", vip, s.key(vip))
	}
	if created {
		s.log.Info("vip created with the default policy", "vip", vip, "key", s.key(vip))
	}
	return nil
}

// Heartbeat renews an instance's TTL check on the agent. ErrNotFound (the
// agent does not know the instance, e.g. it was removed after staying
// critical) tells the client to register again.
func (s *Store) Heartbeat(ctx context.Context, vip, id string) error {
	sid := serviceID(vip, id)
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		return s.client.Agent().UpdateTTLOpts(ttlCheckID(sid), "heartbeat received by meshd", capi.HealthPassing, s.queryOptions(ctx))
	})
	if unknownToAgent(err) {
		return fmt.Errorf("consul: heartbeat %s/%s: instance %w on agent %s", vip, id, registry.ErrNotFound, s.opts.Address)
	}
	if err != nil {
		return wrap(err, "heartbeat %s/%s", vip, id)
	}
	return nil
}

// unknownToAgent reports whether the agent refused a request because it has
// no such service or check.
func unknownToAgent(err error) bool {
	var code int
	if code = statusCode(err); code == 404 {
		return true
	}
	return code >= 400 && code < 600 && strings.Contains(strings.ToLower(err.Error()), "unknown")
}

// SetStatus changes the status of an instance registered through meshd:
// OUT_OF_SERVICE enables the service's maintenance mode; STARTING, DOWN and
// DRAINING set MetaStatus (re-registering the service with the agent, its
// TTL check keeping its state); UP clears both. The instance returned has
// the status the mapping now reads, which is DOWN whatever was set while a
// check is critical.
func (s *Store) SetStatus(ctx context.Context, vip, id string, st registry.Status) (registry.Instance, error) {
	if err := registry.ValidateStatus(st); err != nil {
		return registry.Instance{}, err
	}
	sid := serviceID(vip, id)
	info, err := s.local(ctx, vip, id)
	if err != nil {
		return registry.Instance{}, fmt.Errorf("consul: set status of %s/%s: %w", vip, id, err)
	}
	want := ""
	if st != registry.StatusUp && st != registry.StatusOutOfService {
		want = string(st)
	}
	if info.Service.Meta[MetaStatus] != want {
		if err := s.reregister(ctx, vip, info, want); err != nil {
			return registry.Instance{}, fmt.Errorf("consul: set status of %s/%s: %w", vip, id, err)
		}
	}
	inMaint := false
	for _, c := range info.Checks {
		inMaint = inMaint || strings.HasPrefix(c.CheckID, capi.ServiceMaintPrefix)
	}
	if outOfService := st == registry.StatusOutOfService; outOfService != inMaint {
		if err := s.maintenance(ctx, sid, outOfService); err != nil {
			return registry.Instance{}, fmt.Errorf("consul: set status of %s/%s: %w", vip, id, err)
		}
	}
	info, err = s.local(ctx, vip, id)
	if err != nil {
		return registry.Instance{}, fmt.Errorf("consul: set status of %s/%s: %w", vip, id, err)
	}
	inst, _ := instanceOf(&capi.ServiceEntry{Service: info.Service, Checks: info.Checks}, vip, s.opts.WarningIsUp)
	s.log.Info("instance status changed", "vip", vip, "instance_id", id, "status", st, "reads_as", inst.Status)
	return inst, nil
}

// reregister registers a local service again with MetaStatus set to status
// ("" removes it), keeping its TTL check's current state.
func (s *Store) reregister(ctx context.Context, vip string, info *capi.AgentServiceChecksInfo, status string) error {
	inst, ok := instanceOf(&capi.ServiceEntry{Service: info.Service}, vip, s.opts.WarningIsUp)
	if !ok {
		return fmt.Errorf("service %s has no routable address", info.Service.ID)
	}
	inst = inst.Normalize()
	inst.Status = registry.StatusUp
	if status != "" {
		inst.Status = registry.Status(status)
	}
	checkStatus := capi.HealthPassing
	for _, c := range info.Checks {
		if c.CheckID == ttlCheckID(info.Service.ID) {
			checkStatus = c.Status
		}
	}
	reg := s.registration(inst, checkStatus)
	if at, ok := info.Service.Meta[MetaRegisteredAt]; ok {
		reg.Meta[MetaRegisteredAt] = at
	}
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		return s.client.Agent().ServiceRegisterOpts(reg, capi.ServiceRegisterOpts{}.WithContext(ctx))
	})
	if err != nil {
		return wrap(err, "re-register %s", reg.ID)
	}
	return nil
}

// maintenance turns a local service's maintenance mode on or off.
func (s *Store) maintenance(ctx context.Context, sid string, on bool) error {
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		if on {
			return s.client.Agent().EnableServiceMaintenanceOpts(sid, maintenanceReason, s.queryOptions(ctx))
		}
		return s.client.Agent().DisableServiceMaintenanceOpts(sid, s.queryOptions(ctx))
	})
	if err != nil {
		return wrap(err, "maintenance mode %v for %s", on, sid)
	}
	return nil
}

// Deregister removes an instance registered through meshd from the agent.
func (s *Store) Deregister(ctx context.Context, vip, id string) error {
	sid := serviceID(vip, id)
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		return s.client.Agent().ServiceDeregisterOpts(sid, s.queryOptions(ctx))
	})
	if unknownToAgent(err) {
		err = s.elsewhere(ctx, vip, id)
		return fmt.Errorf("consul: deregister %s/%s: %w", vip, id, err)
	}
	if err != nil {
		return wrap(err, "deregister %s/%s", vip, id)
	}
	s.log.Debug("instance deregistered", "vip", vip, "instance_id", id)
	return nil
}

// local returns an instance registered through meshd with this store's
// agent, with its checks.
func (s *Store) local(ctx context.Context, vip, id string) (*capi.AgentServiceChecksInfo, error) {
	var info *capi.AgentServiceChecksInfo
	err := s.call(ctx, opWrite, func(ctx context.Context) error {
		var err error
		_, info, err = s.client.Agent().AgentHealthServiceByIDOpts(serviceID(vip, id), s.queryOptions(ctx))
		return err
	})
	if err != nil {
		return nil, wrap(err, "read %s", serviceID(vip, id))
	}
	if info == nil || info.Service == nil {
		return nil, s.elsewhere(ctx, vip, id)
	}
	return info, nil
}

// elsewhere explains why this store's agent does not have an instance:
// ErrConflict when Consul has it through another agent (which alone can
// change it), ErrNotFound otherwise.
func (s *Store) elsewhere(ctx context.Context, vip, id string) error {
	var entries []*capi.ServiceEntry
	err := s.call(ctx, opRead, func(ctx context.Context) error {
		var err error
		entries, _, err = s.client.Health().Service(vip, "", false, s.queryOptions(ctx))
		return err
	})
	if err != nil {
		return wrap(err, "list instances of %q", vip)
	}
	for _, e := range entries {
		if e.Service != nil && e.Node != nil && instanceID(e) == id {
			return fmt.Errorf("%w: instance is registered in Consul by the agent of node %q, not through meshd's agent at %s; change it there",
				registry.ErrConflict, e.Node.Node, s.opts.Address)
		}
	}
	return fmt.Errorf("instance %w", registry.ErrNotFound)
}
