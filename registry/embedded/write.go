package embedded

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Every write below is validated on the caller's goroutine, then committed
// by the committer (commit.go), and only then are the VIP's watchers called,
// on the caller's goroutine with no lock held.

// PutVIP creates or replaces a VIP's policy, stored normalized.
func (s *Store) PutVIP(ctx context.Context, v registry.VIP) (registry.VIP, error) {
	stored, _, err := s.ApplyVIP(ctx, v)
	return stored, err
}

// ApplyVIP is PutVIP that also reports whether the VIP was created. The
// answer is decided with the write, so of many concurrent applies of a new
// VIP exactly one reports created.
func (s *Store) ApplyVIP(ctx context.Context, v registry.VIP) (registry.VIP, bool, error) {
	if err := v.Validate(); err != nil {
		return registry.VIP{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return registry.VIP{}, false, fmt.Errorf("embedded: put vip %s: %w", v.Name, err)
	}
	o := &putVIPOp{v: cloneVIP(registry.VIP{Name: v.Name, Policy: v.Policy.Normalize()})}
	if err := s.submit(o); err != nil {
		return registry.VIP{}, false, fmt.Errorf("embedded: put vip %s: %w", v.Name, err)
	}
	s.log.Info("vip stored", "vip", v.Name, "created", o.created)
	s.notify(v.Name)
	return cloneVIP(o.v), o.created, nil
}

type putVIPOp struct {
	v       registry.VIP
	val     []byte
	created bool
}

func (o *putVIPOp) footprint() footprint { return footprint{vip: o.v.Name, vipLevel: true} }

func (o *putVIPOp) plan(s *Store) (bool, error) {
	var err error
	if o.val, err = json.Marshal(o.v); err != nil {
		return false, err
	}
	s.mu.RLock()
	_, existed := s.vips[o.v.Name]
	s.mu.RUnlock()
	o.created = !existed
	return true, nil
}

func (o *putVIPOp) write(tx *bolt.Tx) error {
	return tx.Bucket(bucketVIPs).Put([]byte(o.v.Name), o.val)
}

func (o *putVIPOp) apply(s *Store) {
	if vs, ok := s.vips[o.v.Name]; ok {
		vs.vip = o.v
		return
	}
	s.vips[o.v.Name] = newVIPState(o.v)
}

// DeleteVIP removes a VIP. It returns ErrConflict while the VIP has
// instances and ErrNotFound if it does not exist.
func (s *Store) DeleteVIP(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: delete vip %s: %w", name, err)
	}
	if err := s.submit(&deleteVIPOp{name: name}); err != nil {
		return fmt.Errorf("embedded: delete vip %s: %w", name, err)
	}
	s.log.Info("vip deleted", "vip", name)
	s.notify(name)
	return nil
}

type deleteVIPOp struct{ name string }

func (o *deleteVIPOp) footprint() footprint { return footprint{vip: o.name, vipLevel: true} }

func (o *deleteVIPOp) plan(s *Store) (bool, error) {
	s.mu.RLock()
	vs, ok := s.vips[o.name]
	n := 0
	if ok {
		n = len(vs.instances)
	}
	s.mu.RUnlock()
	switch {
	case !ok:
		return false, registry.ErrNotFound
	case n > 0:
		return false, fmt.Errorf("%w: %d instance(s) still registered; deregister them first", registry.ErrConflict, n)
	}
	return true, nil
}

func (o *deleteVIPOp) write(tx *bolt.Tx) error { return tx.Bucket(bucketVIPs).Delete([]byte(o.name)) }

func (o *deleteVIPOp) apply(s *Store) { delete(s.vips, o.name) }

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
	o := &registerOp{inst: cloneInstance(inst.Normalize())}
	if err := s.submit(o); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: register %s/%s: %w", inst.VIP, inst.ID, err)
	}
	if o.created != nil {
		s.log.Info("vip created with the default policy", "vip", inst.VIP)
	}
	s.log.Debug("instance registered", "vip", inst.VIP, "instance_id", inst.ID, "status", o.inst.Status)
	s.notify(inst.VIP)
	return cloneInstance(o.inst), nil
}

type registerOp struct {
	inst    registry.Instance
	val     []byte
	created *vipState // the VIP this registration creates, if any
	vipVal  []byte
}

func (o *registerOp) footprint() footprint {
	return footprint{vip: o.inst.VIP, id: o.inst.ID, vipLevel: o.created != nil}
}

func (o *registerOp) plan(s *Store) (bool, error) {
	now := s.now()
	o.inst.RegisteredAt, o.inst.RenewedAt = now, now
	o.created = nil
	s.mu.RLock()
	vs, vipExists := s.vips[o.inst.VIP]
	if vipExists {
		if old, ok := vs.instances[o.inst.ID]; ok {
			o.inst.RegisteredAt = old.RegisteredAt
		}
	}
	s.mu.RUnlock()
	var err error
	if !vipExists {
		o.created = newVIPState(defaultVIP(o.inst.VIP))
		if o.vipVal, err = json.Marshal(o.created.vip); err != nil {
			return false, err
		}
	}
	o.val, err = marshalInstance(o.inst)
	return err == nil, err
}

func (o *registerOp) write(tx *bolt.Tx) error {
	if o.created != nil {
		if err := tx.Bucket(bucketVIPs).Put([]byte(o.inst.VIP), o.vipVal); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketInstances).Put(instanceKey(o.inst.VIP, o.inst.ID), o.val)
}

func (o *registerOp) apply(s *Store) {
	vs := o.created
	if vs != nil {
		s.vips[o.inst.VIP] = vs
	} else {
		vs = s.vips[o.inst.VIP]
	}
	s.putInstanceLocked(vs, o.inst)
	delete(s.restored, instanceRef{o.inst.VIP, o.inst.ID})
}

// SetStatus changes an instance's status; ErrNotFound if there is no such instance.
func (s *Store) SetStatus(ctx context.Context, vip, id string, st registry.Status) (registry.Instance, error) {
	if err := registry.ValidateStatus(st); err != nil {
		return registry.Instance{}, err
	}
	if err := ctx.Err(); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: set status of %s/%s: %w", vip, id, err)
	}
	o := &setStatusOp{ref: instanceRef{vip, id}, status: st}
	if err := s.submit(o); err != nil {
		return registry.Instance{}, fmt.Errorf("embedded: set status of %s/%s: %w", vip, id, err)
	}
	s.log.Info("instance status changed", "vip", vip, "instance_id", id, "status", st)
	s.notify(vip)
	return cloneInstance(o.inst), nil
}

type setStatusOp struct {
	ref    instanceRef
	status registry.Status
	inst   registry.Instance
	val    []byte
}

func (o *setStatusOp) footprint() footprint { return footprint{vip: o.ref.vip, id: o.ref.id} }

func (o *setStatusOp) plan(s *Store) (bool, error) {
	inst, err := s.instance(o.ref.vip, o.ref.id)
	if err != nil {
		return false, err
	}
	inst.Status = o.status
	o.inst = inst
	o.val, err = marshalInstance(inst)
	return err == nil, err
}

func (o *setStatusOp) write(tx *bolt.Tx) error {
	return tx.Bucket(bucketInstances).Put(instanceKey(o.ref.vip, o.ref.id), o.val)
}

func (o *setStatusOp) apply(s *Store) {
	vs := s.vips[o.ref.vip]
	// Take the lease from memory: a heartbeat may have renewed it during the commit.
	o.inst.RenewedAt = vs.instances[o.ref.id].RenewedAt
	s.putInstanceLocked(vs, o.inst)
}

// Deregister removes an instance; ErrNotFound if there is no such instance.
func (s *Store) Deregister(ctx context.Context, vip, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: deregister %s/%s: %w", vip, id, err)
	}
	if err := s.submit(&deregisterOp{ref: instanceRef{vip, id}}); err != nil {
		return fmt.Errorf("embedded: deregister %s/%s: %w", vip, id, err)
	}
	s.log.Debug("instance deregistered", "vip", vip, "instance_id", id)
	s.notify(vip)
	return nil
}

type deregisterOp struct{ ref instanceRef }

func (o *deregisterOp) footprint() footprint { return footprint{vip: o.ref.vip, id: o.ref.id} }

func (o *deregisterOp) plan(s *Store) (bool, error) {
	_, err := s.instance(o.ref.vip, o.ref.id)
	return err == nil, err
}

func (o *deregisterOp) write(tx *bolt.Tx) error {
	return tx.Bucket(bucketInstances).Delete(instanceKey(o.ref.vip, o.ref.id))
}

func (o *deregisterOp) apply(s *Store) { s.removeInstanceLocked(o.ref) }

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
