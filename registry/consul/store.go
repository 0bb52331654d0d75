// Package consul is the registry for several stateless meshd replicas: a
// Consul cluster is the source of truth, read through the Consul agent at
// Options.Address with github.com/hashicorp/consul/api.
//
// # Mapping
//
// A VIP is the Consul service of the same name; an instance is one instance
// of that service (address and port; secure port, zone, status override and
// mesh id from the service meta keys Meta*; weight from Weights.Passing). The
// status rules are on instanceOf. A VIP's policy is JSON at the KV key
// <KVPrefix>/<vip>; a VIP exists while that key or a service instance does.
//
// # Writes
//
// Register registers the instance with the agent at Options.Address, with a
// TTL check that Heartbeat renews (agent check update), so the Eureka-style
// client flow of the embedded registry works unchanged. A missed TTL turns
// the check critical, the instance DOWN (not routable), and Consul removes it
// after Options.DeregisterCriticalAfter. SetStatus OUT_OF_SERVICE is Consul's
// maintenance mode; STARTING, DOWN and DRAINING are the MetaStatus key; UP
// clears both.
//
// # Watches
//
// Watch runs blocking queries for the watched VIP only: one on its health
// entries and one on its KV key, each with the last index, a jittered wait
// and backoff with jitter after errors. Lookup of a watched VIP whose two
// queries are current serves their last result; any other Lookup is one
// round of queries (health and KV, in parallel). Nothing on the xDS path
// lists the catalog. A watch never goes back in time: it keeps its index
// across errors, and an answer older than the one it served (a restarted
// server answering from the part of its log it has replayed) is replaced
// by a consistent read before anything is applied (see follow).
//
// # Leases
//
// Instances registered through meshd hold a lease, their TTL check. The
// store applies the embedded registry's rules to the watched VIPs' leases
// (leases, registry.SelfPreservation): a lease missed because Consul was
// down gets one TTL of grace after Consul returns, and when too many leases
// are missed at once, none expires. Health, Leases and the registry's lease
// metrics show it.
//
// # Outage
//
// A request that cannot reach Consul (transport error, 5xx, 429, timeout)
// makes the store degraded (Health, xspace_registry_consul_degraded) and
// wraps registry.ErrUnavailable, so discovery keeps serving the last known
// state. While degraded, Lookups fail at once instead of waiting on a dead
// agent, and a probe retries with backoff and jitter. The outage ends once
// Consul has answered everything for RecoverAfter, the probe's consistent
// read included, so a Consul that stumbles as it comes back is one outage,
// logged once each way; the watches report their VIPs changed as they
// recover, so discovery converges without a restart.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	capi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/registry"
)

var (
	_ registry.Store  = (*Store)(nil)
	_ registry.Source = (*Store)(nil)
	_ registry.Leaser = (*Store)(nil)
)

// Defaults applied by New to zero Options fields.
const (
	DefaultAddress                 = "127.0.0.1:8500"
	DefaultKVPrefix                = "xspace/vips"
	DefaultWaitTime                = time.Minute
	DefaultQueryTimeout            = 2 * time.Second
	DefaultDeregisterCriticalAfter = 10 * time.Minute
	DefaultRetryInterval           = 250 * time.Millisecond
	DefaultMaxRetryInterval        = 5 * time.Second
	DefaultProbeInterval           = 5 * time.Second
	DefaultRecoverAfter            = time.Second
	DefaultSweepInterval           = time.Second
)

// Options configure New. The zero value talks to a local agent.
type Options struct {
	// Address of the Consul agent: host:port, or http(s)://host:port.
	Address string
	// Token is the ACL token; empty uses CONSUL_HTTP_TOKEN or the agent's default.
	Token string
	// Datacenter to read and write KV in; empty means the agent's own.
	// Registrations always go to the agent's datacenter.
	Datacenter string
	// KVPrefix is where VIP policies live: <KVPrefix>/<vip>.
	KVPrefix string
	// AllowStale lets any Consul server answer reads, not only the leader
	// (meshd's default: true).
	AllowStale bool
	// WarningIsUp maps a warning check to UP rather than DOWN (meshd's default: true).
	WarningIsUp bool
	// WaitTime bounds one blocking query; each query waits up to 10 % less, at random.
	WaitTime time.Duration
	// QueryTimeout bounds every request that is not a blocking query.
	QueryTimeout time.Duration
	// DeregisterCriticalAfter is how long an instance registered through
	// meshd may stay critical (e.g. missed heartbeats) before Consul removes it.
	DeregisterCriticalAfter time.Duration
	// RetryInterval and MaxRetryInterval bound the backoff of a failing
	// watch and of the probe while degraded.
	RetryInterval, MaxRetryInterval time.Duration
	// ProbeInterval is how often an idle, healthy store checks Consul.
	ProbeInterval time.Duration
	// RecoverAfter is how long Consul must answer every request, the
	// probe's consistent read included, before an outage ends.
	RecoverAfter time.Duration
	// SelfPreservation is the rule for the leases of instances registered
	// through meshd (see leases); zero fields take registry's defaults.
	SelfPreservation registry.SelfPreservation
	// SweepInterval is how often leases are checked with no answer from
	// Consul: graces end, and expiries leave the self-preservation window.
	SweepInterval time.Duration
	// Now is the clock of the leases; default time.Now.
	Now func() time.Time
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
}

func withDefaults(o Options) Options {
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	o.KVPrefix = strings.Trim(o.KVPrefix, "/")
	if o.KVPrefix == "" {
		o.KVPrefix = DefaultKVPrefix
	}
	setDefault(&o.WaitTime, DefaultWaitTime)
	setDefault(&o.QueryTimeout, DefaultQueryTimeout)
	setDefault(&o.DeregisterCriticalAfter, DefaultDeregisterCriticalAfter)
	setDefault(&o.RetryInterval, DefaultRetryInterval)
	setDefault(&o.MaxRetryInterval, DefaultMaxRetryInterval)
	o.MaxRetryInterval = max(o.MaxRetryInterval, o.RetryInterval)
	setDefault(&o.ProbeInterval, DefaultProbeInterval)
	setDefault(&o.RecoverAfter, DefaultRecoverAfter)
	setDefault(&o.SweepInterval, DefaultSweepInterval)
	if o.SelfPreservation.Share <= 0 {
		o.SelfPreservation.Share = registry.DefaultSelfPreservationShare
	}
	if o.SelfPreservation.MinInstances <= 0 {
		o.SelfPreservation.MinInstances = registry.DefaultSelfPreservationMinInstances
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Store is the Consul registry. It implements registry.Store and
// registry.Source. Close it to stop its watches and probe.
type Store struct {
	client  *capi.Client
	opts    Options
	log     *slog.Logger
	metrics *metrics

	health healthState
	leases *leases

	watchMu sync.Mutex
	watches map[string]*watch
	// watchesPeak is for shrink.Map of watches.
	watchesPeak int

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a store on the Consul agent at opts.Address. It does not fail
// when Consul is unreachable: it starts degraded and recovers on its own,
// so replicas can start before Consul does.
func New(opts Options) (*Store, error) {
	opts = withDefaults(opts)
	if err := CheckAddress(opts.Address); err != nil {
		return nil, fmt.Errorf("consul: address %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Every watched VIP holds two long-polls; keep their connections for reuse.
	transport.MaxIdleConns = 0
	transport.MaxIdleConnsPerHost = 4096
	client, err := capi.NewClient(&capi.Config{
		Address: opts.Address, Token: opts.Token, Datacenter: opts.Datacenter, Transport: transport,
	})
	if err != nil {
		return nil, fmt.Errorf("consul: client for %s: %w", opts.Address, err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("consul: register metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		client:  client,
		opts:    opts,
		log:     opts.Logger.With("component", "registry", "registry", "consul"),
		metrics: m,
		watches: make(map[string]*watch),
		ctx:     ctx,
		cancel:  cancel,
	}
	s.leases = newLeases(opts.SelfPreservation, s.log, m.lease)
	s.health.wake = make(chan struct{}, 1)
	if err := s.probe(); err != nil {
		s.log.Warn("consul is not reachable yet; starting degraded", "address", opts.Address, "error", err)
	} else {
		s.log.Info("consul reachable", "address", opts.Address, "kv_prefix", opts.KVPrefix, "stale_reads", opts.AllowStale)
	}
	s.wg.Add(2)
	go s.probeLoop()
	go s.sweepLeases()
	return s, nil
}

// CheckAddress checks a Consul agent's address: host:port or
// http(s)://host:port, with a port of 1 to 65535. meshd's configuration
// and New both check with it.
func CheckAddress(addr string) error {
	hostPort := addr
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("%q: the scheme must be http or https", addr)
		}
		hostPort = rest
	}
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil || strings.ContainsAny(hostPort, "/?#") {
		return fmt.Errorf("%q is not host:port or http(s)://host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: the port must be 1 to 65535", addr)
	}
	return nil
}

// Close stops every watch and the probe, and unregisters the metrics.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.metrics.unregister()
	})
	return nil
}

// key is the KV key of a VIP's policy.
func (s *Store) key(vip string) string { return s.opts.KVPrefix + "/" + vip }

// queryOptions returns read options bound to ctx.
func (s *Store) queryOptions(ctx context.Context) *capi.QueryOptions {
	q := &capi.QueryOptions{AllowStale: s.opts.AllowStale, Datacenter: s.opts.Datacenter}
	return q.WithContext(ctx)
}

// consistentOptions returns read options for a write's own reads, which
// must not be stale (a DeleteVIP must see an instance registered just before).
func (s *Store) consistentOptions(ctx context.Context) *capi.QueryOptions {
	q := &capi.QueryOptions{Datacenter: s.opts.Datacenter}
	return q.WithContext(ctx)
}

func (s *Store) writeOptions(ctx context.Context) *capi.WriteOptions {
	w := &capi.WriteOptions{Datacenter: s.opts.Datacenter}
	return w.WithContext(ctx)
}

// call runs one request to Consul bounded by QueryTimeout and records its
// outcome: metrics, and the degraded state when Consul could not answer.
func (s *Store) call(ctx context.Context, op string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	s.record(op, start, err)
	return err
}

// record counts one request and updates the degraded state from its outcome.
func (s *Store) record(op string, start time.Time, err error) {
	s.metrics.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.requests.WithLabelValues(op, result).Inc()
	switch {
	case err == nil:
		s.succeeded(op == opProbe)
	case unreachable(err):
		s.failed(err)
	default:
		s.health.touch() // Consul answered, if only to refuse
	}
}

// unreachable reports whether err means Consul could not answer: a
// transport error, a timeout, or a 5xx/429. An ACL refusal or a bad request
// is an answer. A cancellation by our own caller says nothing about Consul.
func unreachable(err error) bool {
	var se capi.StatusError
	switch {
	case errors.As(err, &se):
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests
	case errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// wrap adds context to an error from Consul, and registry.ErrUnavailable
// when Consul could not answer.
func wrap(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if unreachable(err) {
		return fmt.Errorf("consul: %s: %w: %w", what, registry.ErrUnavailable, err)
	}
	return fmt.Errorf("consul: %s: %w", what, err)
}

// statusCode returns the HTTP status of a Consul refusal, or 0.
func statusCode(err error) int {
	var se capi.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
