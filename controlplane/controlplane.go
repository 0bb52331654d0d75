// Package controlplane assembles meshd's control plane, and runs and stops
// it as one: the xDS cache configured as the server serves it, discovery of
// VIPs from a registry, discovery of identities from a certificate manager,
// the resources of Envoy sidecars' own listeners, and the xDS server. meshd
// and every test that needs a control plane build it here, so that all of
// them run the same one.
package controlplane

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
	"github.com/prisma-systems/xspace-mesh/xds/sidecar"
)

// Options describe a control plane; zero values take the defaults of each
// part.
type Options struct {
	// Source is the registry VIPs are looked up in.
	Source registry.Source
	// Certificates, when set, serves streams' identities over SDS.
	Certificates discovery.Certificates
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	// Discovery and Server tune those parts; their Logger, Registerer,
	// Secrets and Nodes are set here.
	Discovery discovery.Options
	Server    server.Options
	// ODCDSTimeout is the on-demand timeout of the sidecars' outbound
	// listeners (sidecar.New).
	ODCDSTimeout time.Duration
}

// ControlPlane is an assembled control plane.
type ControlPlane struct {
	Cache     *cache.Cache
	Discovery *discovery.Discovery
	Secrets   *discovery.Secrets // nil without Options.Certificates
	Server    *server.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewCache returns the xDS cache the server serves from: every type the
// server serves, identity secrets and a sidecar's inbound listener (which
// names its service's inbound route) scoped to the stream's authenticated
// service, and an Envoy sidecar's wildcard listener subscription meaning
// its own listeners.
func NewCache() *cache.Cache {
	return cache.New(server.Types,
		cache.WithScope(resource.SecretType, server.AuthenticatedService),
		cache.WithScope(resource.ListenerType, server.AuthenticatedService),
		cache.WithWildcard(resource.ListenerType, sidecar.Listeners))
}

// New assembles a control plane. Start runs it; Stop ends it.
func New(opts Options) *ControlPlane {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cp := &ControlPlane{Cache: NewCache()}
	cp.ctx, cp.cancel = context.WithCancel(context.Background())
	d := opts.Discovery
	d.Logger, d.Registerer = opts.Logger, opts.Registerer
	cp.Discovery = discovery.New(opts.Source, cp.Cache, d)
	s := opts.Server
	s.Logger, s.Registerer = opts.Logger, opts.Registerer
	s.Nodes = sidecar.New(cp.Cache, opts.ODCDSTimeout)
	if opts.Certificates != nil {
		cp.Secrets = discovery.NewSecrets(opts.Certificates, cp.Cache, opts.Logger)
		s.Secrets = cp.Secrets
	}
	cp.Server = server.New(cp.ctx, cp.Cache, cp.Discovery, s)
	return cp
}

// Start runs discovery's loop. Streams are served once Register added the
// server to a gRPC server that serves.
func (cp *ControlPlane) Start() {
	cp.wg.Go(func() { cp.Discovery.Run(cp.ctx) })
}

// Register adds the xDS services to a gRPC server.
func (cp *ControlPlane) Register(g *grpc.Server) { cp.Server.Register(g) }

// Stop ends every xDS stream (their handlers return; the gRPC server then
// stops without waiting on them) and discovery's loop, and returns once the
// control plane's own goroutines have ended, so that the registry can be
// closed under nothing that still uses it. Stop may be called again.
func (cp *ControlPlane) Stop() {
	cp.cancel()
	cp.wg.Wait()
	cp.Server.Wait()
}
