// Package server serves xDS over gRPC: go-control-plane's delta and
// state-of-the-world servers (ADS plus the standalone CDS and EDS services)
// on top of xspace-mesh's cache, with callbacks that resolve clusters on
// demand as streams subscribe to them, release them when streams let go,
// admit new streams at a bounded rate, and count and log what happens.
package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/rest/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/sidecar"
)

// Types are the resource types the server serves; the cache serves the same.
// Listeners and route configurations are the API listeners and routes of
// proxyless gRPC clients, named like the clusters they lead to.
var Types = []string{
	resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType,
}

// NewCache returns a cache set up as the server expects: serving Types,
// with identity secrets scoped to the stream's authenticated service, and
// an Envoy sidecar's wildcard listener and cluster subscriptions meaning
// its own listeners and application cluster (see package sidecar; pass
// sidecar.New(cache) as Options.Nodes so they are published).
func NewCache() *cache.Cache {
	c := cache.New(Types...)
	c.Scope(resource.SecretType, AuthenticatedService)
	c.Wildcard(resource.ListenerType, sidecar.Listeners)
	c.Wildcard(resource.ClusterType, sidecar.Clusters)
	return c
}

// Resolver makes a cluster's resources ready in the cache before a stream's
// subscription is answered, and lets go of them when no longer needed.
type Resolver interface {
	Acquire(ctx context.Context, cluster string)
	Release(cluster string)
}

// SecretResolver makes a secret ready in the cache for the service a
// stream authenticated as ("" when it did not), and lets go of it.
type SecretResolver interface {
	Acquire(ctx context.Context, service, name string)
	Release(service, name string)
}

// NodePreparer checks a new stream's node and makes what the node needs,
// beyond what it names, ready in the cache (an Envoy sidecar's own
// listeners). An error refuses the stream with InvalidArgument.
type NodePreparer interface {
	Prepare(node *corev3.Node) error
}

// Options tune the server; zero values take the defaults.
type Options struct {
	// Authenticator verifies streams' bearer tokens. With none, every
	// stream is unauthenticated.
	Authenticator Authenticator
	// AllowUnauthenticated admits streams without a token; they receive
	// clusters but never an identity secret. A stream that presents an
	// invalid token is refused either way.
	AllowUnauthenticated bool
	// Secrets resolves SDS subscriptions; nil serves no secrets.
	Secrets SecretResolver
	// Nodes prepares each stream's node before its first request is
	// answered; nil prepares nothing.
	Nodes      NodePreparer
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// AdmissionRate is how many new streams per second are admitted
	// (default 2000); streams beyond it wait. AdmissionBurst is the bucket
	// size (default 2000). A reconnecting fleet is spread out instead of
	// arriving at once, yet 5,000 proxies are all admitted within about 1.5 s,
	// well inside Envoy's 5 s on-demand CDS timeout.
	AdmissionRate  float64
	AdmissionBurst int
	// MaxNamesPerType bounds the names one stream may hold of one type
	// (default 10,000): each is a registry watch while it is held. A
	// request beyond it ends the stream with ResourceExhausted.
	MaxNamesPerType int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the xDS server.
type Server struct {
	cache    gcpcache.Cache
	resolver Resolver
	log      *slog.Logger
	metrics  *metrics
	admit    *rate.Limiter
	now      func() time.Time
	opts     Options
	xds      serverv3.Server

	// nackLog limits NACK log lines: a fleet rejecting one resource would
	// otherwise log once per proxy per push. The metric counts them all.
	nackLog *rate.Limiter

	mu sync.Mutex
	// streams are keyed by protocol and id: the delta and the
	// state-of-the-world servers number their streams independently.
	streams map[streamKey]*streamState
}

type streamKey struct {
	protocol string
	id       int64
}

// New returns an xDS server over cache, resolving subscriptions with resolver.
// ctx bounds the lifetime of every stream.
func New(ctx context.Context, cache gcpcache.Cache, resolver Resolver, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AdmissionRate <= 0 {
		opts.AdmissionRate = 2000
	}
	if opts.AdmissionBurst <= 0 {
		opts.AdmissionBurst = 2000
	}
	if opts.MaxNamesPerType <= 0 {
		opts.MaxNamesPerType = 10_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		cache:    cache,
		resolver: resolver,
		log:      opts.Logger.With("component", "xds"),
		metrics:  newMetrics(opts.Registerer),
		admit:    rate.NewLimiter(rate.Limit(opts.AdmissionRate), opts.AdmissionBurst),
		now:      opts.Now,
		opts:     opts,
		nackLog:  rate.NewLimiter(10, 20),
		streams:  make(map[streamKey]*streamState),
	}
	// Legacy wildcard stays on: Envoy with a CDS or LDS config over ADS
	// opens with an empty request and waits (its initial fetch) for an
	// answer. The cache gives wildcard subscriptions one empty answer and
	// never the world.
	gcpLog := logAdapter{s.log}
	s.xds = serverv3.NewServerAdvanced(
		rest.NewServer(cache, s),
		sotw.NewServer(ctx, cache, s, sotw.WithLogger(gcpLog)),
		delta.NewServer(ctx, cache, s, delta.WithLogger(gcpLog)),
	)
	return s
}

// Register adds the aggregated, cluster and endpoint discovery services,
// delta and state of the world, to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
}

// GRPCOptions are the server options meshd uses for xDS: keepalives that
// find dead proxies within a minute and tolerate idle ones, no cap on the
// streams of one connection, and static flow-control windows.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4 << 20),
		// Static receive windows turn off grpc-go's BDP estimation, which
		// answers a DATA frame from a proxy (every ACK) with a WINDOW_UPDATE
		// and a PING whenever no ping is outstanding: one more write and one
		// more read per stream for every push. Without it the server spent a
		// quarter to a third less CPU per stream and push (BenchmarkFanout
		// in BENCHMARKS.md). Proxies send small requests; 1 MiB holds the
		// re-subscription of a proxy with thousands of clusters, and larger
		// requests still arrive, a window at a time. A window is
		// flow-control credit, not a buffer allocated up front.
		grpc.StaticStreamWindowSize(1 << 20),
		grpc.StaticConnWindowSize(1 << 20),
	}
}
