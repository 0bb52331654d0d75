// Package embedded is the default single-machine registry: VIPs and instances
// in a bbolt file (<dir>/registry.db), served from memory.
//
// # Durability
//
// Every write (PutVIP, DeleteVIP, Register, SetStatus, Deregister, and the
// removal of an expired instance) is validated, committed to bbolt with an
// fsync, and only then applied to memory; a method that returned nil has
// written something that survives kill -9. Writes are committed in groups:
// the writes waiting while one commit is on disk share the next transaction
// and its fsync (commit.go), in the order they arrived. Reads never touch the
// disk, and neither do heartbeats.
//
// # Leases
//
// An instance expires when now > RenewedAt + TTL. Heartbeat renews the lease
// in memory only; heartbeats are not written to disk. Restart grace: Open
// gives every persisted instance RenewedAt = now, so a restart of the
// registry never empties the mesh: each instance has one full lease to send
// a heartbeat before expiry applies to it again. Until it does, it is
// "restored" (its lease state is grace).
//
// # Self-preservation
//
// As in Eureka, the registry refuses to believe that many instances died at
// once; it is likelier that they lost their way to it (a partition, a
// paused host). The rule is registry.SelfPreservation, applied at each sweep
// to the instances that have renewed since the store opened:
//
//	renewing: registered instances that registered or sent a heartbeat since Open;
//	overdue:  those of them whose lease has run out now;
//	expired:  those that expired within registry.SelfPreservationWindow (30s).
//
// If some are overdue, renewing+expired >= Options.SelfPreservationMinInstances
// (10) and overdue+expired > max(1, floor(share × (renewing+expired))), share
// being Options.SelfPreservationShare (0.15), nothing expires and the store is
// in self-preservation (logged at Warn when it starts, at Info when it ends,
// and exported as xspace_registry_self_preservation). Otherwise every overdue
// instance expires, restored ones included. So a single dead instance always
// expires; a small fleet expires its dead; a partition that silences many
// renewing instances at once keeps them all (and the restored ones); and
// instances that died while meshd was down expire after their grace lease,
// because they never renew and so never count. Instances that stay silent
// for good after a real partition keep the store in self-preservation until
// someone deregisters them, as in Eureka. Overdue instances are counted in
// xspace_registry_overdue_instances and shown by Instances (Lease) whatever
// the mode.
package embedded

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/prisma-systems/xspace-mesh/registry"
)

var (
	_ registry.Store  = (*Store)(nil)
	_ registry.Source = (*Store)(nil)
	_ registry.Leaser = (*Store)(nil)
)

// DefaultSweepInterval is how often leases are checked unless Options say otherwise.
const DefaultSweepInterval = time.Second

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// SweepInterval is how often leases are checked; default 1s.
	SweepInterval time.Duration
	// SelfPreservationShare is the share of the renewing instances that may
	// miss their lease within one window before expiry is suspended;
	// default 0.15 (registry.SelfPreservation.Share).
	SelfPreservationShare float64
	// SelfPreservationMinInstances is the smallest renewing fleet in which
	// expiry is ever suspended; default 10, and 1 means no minimum
	// (registry.SelfPreservation.MinInstances).
	SelfPreservationMinInstances int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Evidence are files whose presence shows that dir was used before
	// (meshd passes its CA directory and token keyring): an empty
	// registry.db beside one of them is refused as damaged instead of being
	// taken for a new registry. A missing registry.db is always a fresh start.
	Evidence []string
}

// Health is a snapshot of the store for /readyz and debug endpoints.
type Health struct {
	SelfPreservation bool `json:"self_preservation"`
	Instances        int  `json:"instances"`
	// Overdue counts the instances whose lease has run out and that are
	// still registered: held by self-preservation, or awaiting the next sweep.
	Overdue int `json:"overdue"`
	// Renewing counts the instances that registered or sent a heartbeat
	// since the store opened; the others are restored and in their grace lease.
	Renewing int `json:"renewing"`
	VIPs     int `json:"vips"`
	// Failed says why the store refuses writes after a storage failure;
	// empty while it is sound.
	Failed string `json:"failed,omitempty"`
}

// Store is the embedded registry. It implements registry.Store and
// registry.Source. Close it to stop its sweeper and release the file.
type Store struct {
	db           *bolt.DB
	path         string
	log          *slog.Logger
	metrics      *metrics
	now          func() time.Time
	preservation registry.SelfPreservation

	// q feeds the committer, the one goroutine that writes (commit.go).
	q             *queue
	stopCommitter chan struct{}
	committerDone chan struct{}
	// beforeCommit, when set by a test, runs inside each commit's
	// transaction with the number of writes it carries; an error aborts it.
	beforeCommit func(writes int) error
	// recent holds the times at which renewing instances expired, oldest
	// first; only the committer touches it.
	recent []time.Time

	failMu sync.Mutex
	failed error // set once a storage panic made bbolt's state unknown

	// mu guards the in-memory state below. Readers and heartbeats hold it
	// briefly; the committer holds it exclusively only to apply a commit.
	mu     sync.RWMutex
	vips   map[string]*vipState
	counts map[registry.Status]int
	total  int
	// restored holds the instances loaded from disk that have not renewed
	// since Open (registry.LeaseGrace).
	restored   map[instanceRef]bool
	preserving bool
	// nextDue is a time no lease runs out before (see lease.go).
	nextDue atomic.Pointer[time.Time]

	watchMu  sync.Mutex
	watchers map[string][]*watcher
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

func newVIPState(v registry.VIP) *vipState {
	return &vipState{vip: v, instances: make(map[string]registry.Instance)}
}

// Open opens or creates <dir>/registry.db, checks and loads it, and starts
// the committer and the lease sweeper. A second process opening the same
// directory gets an error after about a second instead of waiting.
func Open(dir string, opts Options) (*Store, error) {
	opts = withDefaults(opts)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("embedded: register metrics: %w", err)
	}
	db, err := openDB(dir, opts.Evidence)
	if err != nil {
		m.unregister()
		return nil, err
	}
	s := &Store{
		db:      db,
		path:    db.Path(),
		log:     opts.Logger.With("component", "registry"),
		metrics: m,
		now:     opts.Now,
		preservation: registry.SelfPreservation{
			Share: opts.SelfPreservationShare, MinInstances: opts.SelfPreservationMinInstances,
		},
		q:             newQueue(),
		stopCommitter: make(chan struct{}),
		committerDone: make(chan struct{}),
		counts:        make(map[registry.Status]int),
		restored:      make(map[instanceRef]bool),
		watchers:      make(map[string][]*watcher),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
	}
	if err := s.load(); err != nil {
		closeUnlessPanicked(db, err)
		m.unregister()
		return nil, err
	}
	go s.commitLoop()
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
		o.SelfPreservationShare = registry.DefaultSelfPreservationShare
	}
	if o.SelfPreservationMinInstances <= 0 {
		o.SelfPreservationMinInstances = registry.DefaultSelfPreservationMinInstances
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// load fills memory from disk. Instances whose VIP is missing (which no
// write path produces) get their VIP back with the default policy. Every
// instance starts restored, with a fresh lease.
func (s *Store) load() error {
	var vips map[string]*vipState
	var orphans []registry.Instance
	err := guard(func() (err error) {
		vips, orphans, err = loadState(s.db, s.now())
		return err
	})
	if err != nil {
		return damaged(s.path, fmt.Errorf("holds data meshd cannot read: %w", err))
	}
	if len(orphans) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, inst := range orphans {
				if _, ok := vips[inst.VIP]; !ok {
					vs := newVIPState(defaultVIP(inst.VIP))
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
	for name, vs := range vips {
		for id, inst := range vs.instances {
			s.counts[inst.Status]++
			s.total++
			s.restored[instanceRef{name, id}] = true
		}
	}
	s.updateGauges()
	s.log.Info("registry loaded", "path", s.path, "vips", len(vips), "instances", s.total)
	return nil
}

// Close stops the sweeper and the committer (writes still waiting get an
// error), unregisters the metrics and closes the database. Calls after the
// first return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		for _, r := range s.q.close() {
			r.done <- errClosed
		}
		close(s.stopCommitter)
		<-s.committerDone
		s.metrics.unregister()
		if err := s.failure(); err != nil {
			// bbolt may hold its own locks after the panic; closing could hang.
			s.closeErr = fmt.Errorf("embedded: close %s: not closed after a storage failure: %w", s.path, err)
			return
		}
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("embedded: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// Health reports counts and whether the store is in self-preservation.
func (s *Store) Health() Health {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	overdue, c := s.leasesLocked(now)
	h := Health{
		SelfPreservation: s.preserving,
		Instances:        s.total,
		Overdue:          len(overdue),
		Renewing:         c.Renewing,
		VIPs:             len(s.vips),
	}
	if err := s.failure(); err != nil {
		h.Failed = err.Error()
	}
	return h
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
	s.lowerNextDue(deadline(inst))
}

// removeInstanceLocked removes an instance from memory; the caller holds mu.
func (s *Store) removeInstanceLocked(ref instanceRef) {
	vs := s.vips[ref.vip]
	if old, ok := vs.instances[ref.id]; ok {
		delete(vs.instances, ref.id)
		delete(s.restored, ref)
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
