package embedded

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Every write below follows the same steps: validate, take writeMu, read the
// current state under mu, commit to bbolt, apply to memory under mu, release
// the locks, and only then call the VIP's watchers.

// PutVIP creates or replaces a VIP's policy, stored normalized.
func (s *Store) PutVIP(ctx context.Context, v registry.VIP) (registry.VIP, error) {
	if err := v.Validate(); err != nil {
		return registry.VIP{}, err
	}
	if err := ctx.Err(); err != nil {
		return registry.VIP{}, fmt.Errorf("embedded: put vip %s: %w", v.Name, err)
	}
	v = cloneVIP(registry.VIP{Name: v.Name, Policy: v.Policy.Normalize()})
	if err := s.putVIP(v); err != nil {
		return registry.VIP{}, err
	}
	s.notify(v.Name)
	return cloneVIP(v), nil
}

func (s *Store) putVIP(v registry.VIP) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.db.Update(func(tx *bolt.Tx) error { return putVIP(tx, v) }); err != nil {
		return fmt.Errorf("embedded: put vip %s: %w", v.Name, err)
	}
	s.mu.Lock()
	vs, existed := s.vips[v.Name]
	if existed {
		vs.vip = v
	} else {
		s.vips[v.Name] = &vipState{vip: v, instances: make(map[string]registry.Instance)}
	}
	s.updateGauges()
	s.mu.Unlock()
	s.log.Info("vip stored", "vip", v.Name, "created", !existed)
	return nil
}

// DeleteVIP removes a VIP. It returns ErrConflict while the VIP has
// instances and ErrNotFound if it does not exist.
func (s *Store) DeleteVIP(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: delete vip %s: %w", name, err)
	}
	if err := s.deleteVIP(name); err != nil {
		return err
	}
	s.notify(name)
	return nil
}

func (s *Store) deleteVIP(name string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	vs, ok := s.vips[name]
	n := 0
	if ok {
		n = len(vs.instances)
	}
	s.mu.RUnlock()
	switch {
	case !ok:
		return fmt.Errorf("embedded: delete vip %s: %w", name, registry.ErrNotFound)
	case n > 0:
		return fmt.Errorf("embedded: delete vip %s: %w: %d instance(s) still registered; deregister them first",
			name, registry.ErrConflict, n)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return deleteVIP(tx, name) }); err != nil {
		return fmt.Errorf("embedded: delete vip %s: %w", name, err)
	}
	s.mu.Lock()
	delete(s.vips, name)
	s.updateGauges()
	s.mu.Unlock()
	s.log.Info("vip deleted", "vip", name)
	return nil
}

// Register creates or replaces an instance with a fresh lease, creating its
// VIP with the default policy in the same transaction when it does not exist.
// Replacing an instance keeps its original RegisteredAt.
func (s *Store) Register(ctx context.Context, inst registry.Instance) (registry.Instance, error) {
	if err := inst.Validate(); err != nil {
		return registry.Instance{}, err
	}
	if err := ctx.Err(); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: register %s/%s: %w", inst.VIP, inst.ID, err)
	}
	inst, err := s.register(cloneInstance(inst.Normalize()))
	if err != nil {
		return registry.Instance{}, err
	}
	s.notify(inst.VIP)
	return inst, nil
}

func (s *Store) register(inst registry.Instance) (registry.Instance, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := s.now()
	inst.RegisteredAt, inst.RenewedAt = now, now
	s.mu.RLock()
	vs, vipExists := s.vips[inst.VIP]
	if vipExists {
		if old, ok := vs.instances[inst.ID]; ok {
			inst.RegisteredAt = old.RegisteredAt
		}
	}
	s.mu.RUnlock()

	var created *vipState
	if !vipExists {
		created = &vipState{vip: defaultVIP(inst.VIP), instances: make(map[string]registry.Instance)}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if created != nil {
			if err := putVIP(tx, created.vip); err != nil {
				return err
			}
		}
		return putInstance(tx, inst)
	})
	if err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: register %s/%s: %w", inst.VIP, inst.ID, err)
	}
	s.mu.Lock()
	if created != nil {
		vs = created
		s.vips[inst.VIP] = vs
	}
	s.putInstanceLocked(vs, inst)
	s.updateGauges()
	s.mu.Unlock()
	if created != nil {
		s.log.Info("vip created with the default policy", "vip", inst.VIP)
	}
	s.log.Debug("instance registered", "vip", inst.VIP, "instance_id", inst.ID, "status", inst.Status)
	return cloneInstance(inst), nil
}

// SetStatus changes an instance's status; ErrNotFound if there is no such instance.
func (s *Store) SetStatus(ctx context.Context, vip, id string, st registry.Status) (registry.Instance, error) {
	if err := registry.ValidateStatus(st); err != nil {
		return registry.Instance{}, err
	}
	if err := ctx.Err(); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: set status of %s/%s: %w", vip, id, err)
	}
	inst, err := s.setStatus(vip, id, st)
	if err != nil {
		return registry.Instance{}, err
	}
	s.notify(vip)
	return inst, nil
}

func (s *Store) setStatus(vip, id string, st registry.Status) (registry.Instance, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	inst, err := s.instance(vip, id)
	if err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: set status of %s/%s: %w", vip, id, err)
	}
	inst.Status = st
	if err := s.db.Update(func(tx *bolt.Tx) error { return putInstance(tx, inst) }); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: set status of %s/%s: %w", vip, id, err)
	}
	s.mu.Lock()
	vs := s.vips[vip]
	// Take the lease from memory: a heartbeat may have renewed it during the commit.
	inst.RenewedAt = vs.instances[id].RenewedAt
	s.putInstanceLocked(vs, inst)
	s.updateGauges()
	s.mu.Unlock()
	s.log.Info("instance status changed", "vip", vip, "instance_id", id, "status", st)
	return cloneInstance(inst), nil
}

// Deregister removes an instance; ErrNotFound if there is no such instance.
func (s *Store) Deregister(ctx context.Context, vip, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: deregister %s/%s: %w", vip, id, err)
	}
	if err := s.deregister(vip, id); err != nil {
		return err
	}
	s.notify(vip)
	return nil
}

func (s *Store) deregister(vip, id string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if _, err := s.instance(vip, id); err != nil {
		return fmt.Errorf("embedded: deregister %s/%s: %w", vip, id, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return deleteInstance(tx, vip, id) }); err != nil {
		return fmt.Errorf("embedded: deregister %s/%s: %w", vip, id, err)
	}
	s.mu.Lock()
	s.removeInstanceLocked(s.vips[vip], id)
	s.updateGauges()
	s.mu.Unlock()
	s.log.Debug("instance deregistered", "vip", vip, "instance_id", id)
	return nil
}

// instance returns a copy of one instance, or an error wrapping
// ErrNotFound that says whether the VIP or the instance is missing.
func (s *Store) instance(vip, id string) (registry.Instance, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs, ok := s.vips[vip]
	if !ok {
		return registry.Instance{}, fmt.Errorf("vip %w", registry.ErrNotFound)
	}
	inst, ok := vs.instances[id]
	if !ok {
		return registry.Instance{}, fmt.Errorf("instance %w", registry.ErrNotFound)
	}
	return cloneInstance(inst), nil
}
