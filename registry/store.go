package registry

import (
	"context"
	"errors"
)

// Errors returned (wrapped) by every Store.
var (
	// ErrNotFound: no such VIP or instance.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request contradicts what is stored (e.g. deleting a VIP that still has instances).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the registry cannot be reached; try again.
	ErrUnavailable = errors.New("registry unavailable")
)

// Store is what the REST API and meshctl need from a registry. The embedded
// store and the Consul store both implement it. Writes validate their input
// and return a *ValidationError, storing nothing, when it is bad.
type Store interface {
	// PutVIP creates or replaces a VIP's policy, stored normalized.
	PutVIP(ctx context.Context, v VIP) (VIP, error)
	GetVIP(ctx context.Context, name string) (VIP, error)
	ListVIPs(ctx context.Context) ([]VIP, error)
	// DeleteVIP removes a VIP; ErrConflict if it still has instances.
	DeleteVIP(ctx context.Context, name string) error

	// Register creates or replaces an instance, creating its VIP with the
	// default policy when it does not exist yet.
	Register(ctx context.Context, inst Instance) (Instance, error)
	// Heartbeat renews an instance's lease; ErrNotFound tells the client to register again.
	Heartbeat(ctx context.Context, vip, id string) error
	SetStatus(ctx context.Context, vip, id string, s Status) (Instance, error)
	Deregister(ctx context.Context, vip, id string) error
	// Instances lists a VIP's instances sorted by id; ErrNotFound if the VIP does not exist.
	Instances(ctx context.Context, vip string) ([]Instance, error)
}

// Leaser is implemented by registries that keep instances' leases
// themselves (the embedded one), so that the REST API can show which
// instances are overdue whatever the self-preservation mode.
type Leaser interface {
	// Leases returns the state of the lease of each of a VIP's instances,
	// by instance id; nil if the VIP does not exist.
	Leases(vip string) map[string]Lease
}

// Source is what discovery needs from a registry: one VIP at a time, never the world.
type Source interface {
	// Lookup returns a VIP and its instances; ErrNotFound if the VIP does not exist.
	Lookup(ctx context.Context, vip string) (Service, error)
	// Watch calls changed whenever the VIP, its policy or its instances may
	// have changed (including being created or deleted), until stop is
	// called. changed must return quickly and must not call back into the
	// registry; the watcher calls Lookup afterwards to read the new state.
	Watch(vip string, changed func()) (stop func())
}
