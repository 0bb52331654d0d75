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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/prisma-systems/xspace-mesh/xds/cache"
)

// Types are the resource types the server serves; the cache serves the same.
// Listeners and route configurations are the API listeners and routes of
// proxyless gRPC clients, named like the clusters they lead to, and Envoy
// sidecars' own listeners and routes.
var Types = []string{
	resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType,
}

// servedTypes is len(Types): the size of the per-type arrays indexed by
// typeIndex.
const servedTypes = 5

// Resolver makes a cluster's resources ready in the cache before a stream's
// subscription is answered, and lets go of them when no longer needed.
// AcquireResource makes the resource of one type ready (and may leave the
// name's resources of other types for later); it reports whether the name
// exists and whether the caller now holds a reference, to be given back
// with one Release. Found reports whether a name exists now.
type Resolver interface {
	AcquireResource(ctx context.Context, typeURL, name string) (found, held bool)
	Release(cluster string)
	Found(cluster string) bool
}

// SecretResolver makes a secret ready in the cache for the service a
// stream authenticated as ("" when it did not), and lets go of it. Acquire
// reports as Resolver's does.
type SecretResolver interface {
	Acquire(ctx context.Context, service, name string) (found, held bool)
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
	// (default DefaultAdmissionRate); streams beyond it wait, authenticated
	// ones first. AdmissionBurst is the bucket size (default
	// DefaultAdmissionBurst). A reconnecting fleet is spread out instead of
	// arriving at once, yet 5,000 proxies are all admitted within about
	// 1.5 s, well inside Envoy's 5 s on-demand CDS timeout.
	AdmissionRate  float64
	AdmissionBurst int
	// MaxWaitingStreams bounds the streams waiting for admission (default
	// DefaultMaxWaitingStreams); one more is refused with Unavailable,
	// unless it is authenticated and an unauthenticated one waits: that one
	// is refused instead.
	MaxWaitingStreams int
	// MaxStreamsPerPeer bounds the streams one peer address may have open
	// or waiting (default DefaultMaxStreamsPerPeer); one more is refused
	// with ResourceExhausted.
	MaxStreamsPerPeer int
	// MaxUnknownNames bounds the names of one type a stream holds that did
	// not exist when it subscribed (default DefaultMaxUnknownNames); past
	// it the server stops tracking the oldest one (see heldNames). Names
	// that exist are not bounded: the registry bounds them.
	MaxUnknownNames int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// tokens, when set, replaces the admission rate limiter: tests hand
	// out admissions one by one.
	tokens tokens
}

// The defaults of Options (and of meshd's xds configuration).
const (
	DefaultAdmissionRate           = 2000
	DefaultAdmissionBurst          = 2000
	DefaultMaxWaitingStreams       = 10_000
	DefaultMaxStreamsPerPeer       = 256
	DefaultMaxStreamsPerConnection = 100
	DefaultMaxUnknownNames         = 256
)

// streamCache is a cache that keeps a stream's watches across its
// requests when told of the stream (*cache.Cache; see its OpenStream).
type streamCache interface {
	OpenStream(node *corev3.Node)
	CloseStream(node *corev3.Node)
}

var _ streamCache = (*cache.Cache)(nil)

// Server is the xDS server.
type Server struct {
	cache     gcpcache.Cache
	resolver  Resolver
	log       *slog.Logger
	metrics   *metrics
	admission *admission
	now       func() time.Time
	opts      Options
	xds       serverv3.Server

	// nackLog limits NACK log lines: a fleet rejecting one resource would
	// otherwise log once per proxy per push. The metric counts them all.
	nackLog *rate.Limiter

	mu sync.RWMutex
	// streams are keyed by protocol and id: the delta and the
	// state-of-the-world servers number their streams independently.
	streams     map[streamKey]*streamState
	streamsPeak int // for shrink.Map

	wg sync.WaitGroup // the server's own goroutines
}

// Wait returns once the server's own goroutines have ended, after the
// context given to New did.
func (s *Server) Wait() { s.wg.Wait() }

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
		opts.AdmissionRate = DefaultAdmissionRate
	}
	if opts.AdmissionBurst <= 0 {
		opts.AdmissionBurst = DefaultAdmissionBurst
	}
	if opts.MaxWaitingStreams <= 0 {
		opts.MaxWaitingStreams = DefaultMaxWaitingStreams
	}
	if opts.MaxStreamsPerPeer <= 0 {
		opts.MaxStreamsPerPeer = DefaultMaxStreamsPerPeer
	}
	if opts.MaxUnknownNames <= 0 {
		opts.MaxUnknownNames = DefaultMaxUnknownNames
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.tokens == nil {
		opts.tokens = rate.NewLimiter(rate.Limit(opts.AdmissionRate), opts.AdmissionBurst)
	}
	m := newMetrics(opts.Registerer)
	s := &Server{
		cache:     cache,
		resolver:  resolver,
		log:       opts.Logger.With("component", "xds"),
		metrics:   m,
		admission: newAdmission(opts.tokens, opts.MaxStreamsPerPeer, opts.MaxWaitingStreams, m),
		now:       opts.Now,
		opts:      opts,
		nackLog:   rate.NewLimiter(10, 20),
		streams:   make(map[streamKey]*streamState),
	}
	s.wg.Go(func() { s.admission.run(ctx) })
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
// delta and state of the world, to a gRPC server. Their unary Fetch calls
// are refused (see fetchRefused).
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, fetchRefused{s.xds})
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, fetchRefused{s.xds})
}

// errFetch is how a unary fetch is refused.
var errFetch = status.Error(codes.Unimplemented,
	"unary xDS fetches are not served: they carry no stream identity and hold nothing; use a delta or state-of-the-world stream (Envoy and gRPC clients do)")

// fetchRefused serves the cluster and endpoint discovery services without
// their unary Fetch calls. No client of the mesh uses them (Envoy polls
// REST-JSON over HTTP, not these; Envoy and gRPC clients stream), and they
// would answer without authentication or per-stream bounds.
type fetchRefused struct{ serverv3.Server }

func (fetchRefused) FetchClusters(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errFetch
}

func (fetchRefused) FetchEndpoints(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errFetch
}

// GRPCOptions are the server options meshd uses for xDS: keepalives that
// find dead proxies within a minute and tolerate idle ones, at most
// streamsPerConn concurrent streams on one connection (a client opening
// more waits for one to end: HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS; 0
// takes DefaultMaxStreamsPerConnection), and static flow-control windows.
func GRPCOptions(streamsPerConn uint32) []grpc.ServerOption {
	if streamsPerConn == 0 {
		streamsPerConn = DefaultMaxStreamsPerConnection
	}
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(streamsPerConn),
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
