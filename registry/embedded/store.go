// Package embedded is the default single-machine registry: VIPs and instances
// in a bbolt file (<dir>/registry.db), served from memory.
//
// # Durability
//
// Every write (PutVIP, DeleteVIP, Register, SetStatus, Deregister, and the
// removal of an expired instance) is validated, committed to bbolt with an
// fsync, and only then applied to memory; a method that returned nil has
// written something that survives kill -9. Writes are serialised, so disk and
// memory change in the same order. Reads never touch the disk.
//
// # Leases
//
// An instance expires when now > RenewedAt + TTL. Heartbeat renews the lease
// in memory only; heartbeats are not written to disk. Restart grace: Open
// gives every persisted instance RenewedAt = now, so a restart of the
// registry never empties the mesh: each instance has one full lease to send
// a heartbeat before expiry applies to it again.
//
// # Self-preservation
//
// As in Eureka, the registry refuses to believe that many instances died at
// once; it is likelier that they lost their way to it (a partition, a
// paused host). Each Sweep counts
//
//	overdue: instances whose lease has expired now;
//	recent:  instances expired by earlier sweeps within the last
//	         registry.DefaultTTL (30s);
//	limit:   max(1, floor(share × (instances + recent))), share being
//	         Options.SelfPreservationShare (0.15 by default).
//
// If overdue > 0 and overdue+recent > limit, nothing expires and the store is
// in self-preservation (logged at Warn when it starts, at Info when it ends,
// and exported as xspace_registry_self_preservation). Otherwise every overdue
// instance expires. So a single dead instance always expires; a partition
// that silences many instances at once keeps them all; and when heartbeats
// come back, overdue drops and expiry resumes with whatever is still silent.
// Instances that stay silent for good keep the store in self-preservation
// until someone deregisters them, as in Eureka.
package embedded

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

var (
	_ registry.Store  = (*Store)(nil)
	_ registry.Source = (*Store)(nil)
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultSweepInterval         = time.Second
	DefaultSelfPreservationShare = 0.15
)

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// SweepInterval is how often leases are checked; default 1s.
	SweepInterval time.Duration
	// SelfPreservationShare is the share of instances allowed to expire
	// within one TTL before expiry is suspended; default 0.15.
	SelfPreservationShare float64
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Health is a snapshot of the store for /readyz and debug endpoints.
type Health struct {
	SelfPreservation bool `json:"self_preservation"`
	Instances        int  `json:"instances"`
	Overdue          int  `json:"overdue"`
	VIPs             int  `json:"vips"`
}

// Store is the embedded registry. It implements registry.Store and
// registry.Source. Close it to stop its sweeper and release the file.
type Store struct {
	db      *bolt.DB
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	share   float64

	// writeMu serialises writers: each holds it from reading the state it
	// changes, through the bbolt commit, to applying the change in memory.
	writeMu sync.Mutex
	// recent holds the expiry times of instances expired by earlier sweeps,
	// oldest first; guarded by writeMu.
	recent []time.Time

	// mu guards the in-memory state below. Readers hold it shared; writers
	// hold it exclusively only to apply a committed change.
	mu         sync.RWMutex
	vips       map[string]*vipState
	counts     map[registry.Status]int
	total      int
	preserving bool

	watchMu  sync.Mutex
	watchers map[string]map[*watcher]struct{}
	// watchersPeak is for shrink.Map of watchers.
	watchersPeak int

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// vipState is one VIP and its instances, keyed by id. Values in memory are
// never handed out: every read returns a copy.
type vipState struct {
	vip       registry.VIP
	instances map[string]registry.Instance
}

// Open opens or creates <dir>/registry.db, loads it, and starts the lease
// sweeper. A second process opening the same directory gets an error after
// about a second instead of waiting.
func Open(dir string, opts Options) (*Store, error) {
	opts = withDefaults(opts)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("embedded: register metrics: %w", err)
	}
	db, err := openDB(dir)
	if err != nil {
		m.unregister()
		return nil, err
	}
	s := &Store{
		db:       db,
		log:      opts.Logger.With("component", "registry"),
		metrics:  m,
		now:      opts.Now,
		share:    opts.SelfPreservationShare,
		counts:   make(map[registry.Status]int),
		watchers: make(map[string]map[*watcher]struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		m.unregister()
		return nil, err
	}
	go s.sweepEvery(opts.SweepInterval)
	return s, nil
}

func withDefaults(o Options) Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.SelfPreservationShare <= 0 {
		o.SelfPreservationShare = DefaultSelfPreservationShare
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// load fills memory from disk. Instances whose VIP is missing (which no
// write path produces) get their VIP back with the default policy.
func (s *Store) load() error {
	vips, orphans, err := loadState(s.db, s.now())
	if err != nil {
		return err
	}
	if len(orphans) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, inst := range orphans {
				if _, ok := vips[inst.VIP]; !ok {
					vs := &vipState{vip: defaultVIP(inst.VIP), instances: make(map[string]registry.Instance)}
					vips[inst.VIP] = vs
					if err := putVIP(tx, vs.vip); err != nil {
						return err
					}
					s.log.Warn("instance without its vip on disk; vip recreated with the default policy",
						"vip", inst.VIP, "instance_id", inst.ID)
				}
				vips[inst.VIP].instances[inst.ID] = inst
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("embedded: recreate vips of %d instances: %w", len(orphans), err)
		}
	}
	s.vips = vips
	for _, vs := range vips {
		for _, inst := range vs.instances {
			s.counts[inst.Status]++
			s.total++
		}
	}
	s.updateGauges()
	s.log.Info("registry loaded", "path", s.db.Path(), "vips", len(vips), "instances", s.total)
	return nil
}

// Close stops the sweeper, unregisters the metrics and closes the database.
// Calls after the first return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.metrics.unregister()
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("embedded: close %s: %w", s.db.Path(), err)
		}
	})
	return s.closeErr
}

// Health reports counts and whether the store is in self-preservation.
func (s *Store) Health() Health {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Health{
		SelfPreservation: s.preserving,
		Instances:        s.total,
		Overdue:          len(s.overdueLocked(now)),
		VIPs:             len(s.vips),
	}
}

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

// putInstanceLocked adds or replaces an instance in memory, keeping the
// status counts right; the caller holds mu.
func (s *Store) putInstanceLocked(vs *vipState, inst registry.Instance) {
	if old, ok := vs.instances[inst.ID]; ok {
		s.counts[old.Status]--
		s.total--
	}
	vs.instances[inst.ID] = inst
	s.counts[inst.Status]++
	s.total++
}

// removeInstanceLocked removes an instance from memory; the caller holds mu.
func (s *Store) removeInstanceLocked(vs *vipState, id string) {
	if old, ok := vs.instances[id]; ok {
		delete(vs.instances, id)
		s.counts[old.Status]--
		s.total--
	}
}

// updateGauges sets the size gauges from memory; the caller holds mu.
func (s *Store) updateGauges() {
	s.metrics.vips.Set(float64(len(s.vips)))
	for _, st := range statuses {
		s.metrics.instances.WithLabelValues(string(st)).Set(float64(s.counts[st]))
	}
}

func defaultVIP(name string) registry.VIP {
	return registry.VIP{Name: name, Policy: registry.Policy{}.Normalize()}
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
