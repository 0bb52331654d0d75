// Command meshd is the xspace-mesh control plane: it serves Envoy sidecars
// their clusters on demand over xDS, from the service registry, and serves
// the REST API service owners register VIPs and instances with.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/config"
	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/internal/buildinfo"
	"github.com/prisma-systems/xspace-mesh/ops"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

const usage = `meshd is the xspace-mesh control plane.

It serves Envoy sidecars their clusters on demand (On-Demand CDS over delta
xDS) from the service registry (embedded, or Consul with registry.type:
consul in the config file), and the REST API, metrics, health and debug
endpoints over HTTP. With no flags it runs on its embedded registry:

  xDS (gRPC)   127.0.0.1:18000
  HTTP         127.0.0.1:18080   /v1/vips, /metrics, /healthz, /readyz, /debug/...
  data         ./data

Configuration comes from defaults, then --config FILE (YAML; unknown fields
are errors), then the flags below. --print-config shows the result.

Usage:
  meshd [flags]

Flags:
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, printOnly, err := loadConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errVersion) {
		fmt.Println(buildinfo.Get().String("meshd"))
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshd:", err)
		return 2
	}
	if printOnly {
		b, err := cfg.YAML()
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshd:", err)
			return 1
		}
		if _, err := os.Stdout.Write(b); err != nil {
			return 1
		}
		return 0
	}
	logger := newLogger(cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("meshd stopped", "error", err)
		return 1
	}
	return 0
}

// errVersion is loadConfig's answer to --version.
var errVersion = errors.New("version requested")

// loadConfig applies defaults, then the config file, then flags.
func loadConfig(args []string) (config.Config, bool, error) {
	fs := flag.NewFlagSet("meshd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	def := config.Defaults()
	path := fs.String("config", "", "YAML config `file` (see --print-config for every field)")
	xdsAddr := fs.String("xds-address", def.XDS.Address, "xDS gRPC listen `address`")
	httpAddr := fs.String("http-address", def.HTTP.Address, "HTTP listen `address` (REST API, metrics, health, debug)")
	dataDir := fs.String("data-dir", def.DataDir, "`directory` of the embedded registry's database")
	level := fs.String("log-level", def.Log.Level, "log `level`: debug, info, warn, error")
	format := fs.String("log-format", def.Log.Format, "log `format`: text or json")
	printCfg := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	version := fs.Bool("version", false, "print meshd's version and exit")
	if err := fs.Parse(args); err != nil {
		return def, false, err
	}
	if *version {
		return def, false, errVersion
	}
	if fs.NArg() > 0 {
		return def, false, fmt.Errorf("unexpected argument %q; meshd takes only flags (see --help)", fs.Arg(0))
	}
	cfg := def
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return cfg, false, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "xds-address":
			cfg.XDS.Address = *xdsAddr
		case "http-address":
			cfg.HTTP.Address = *httpAddr
		case "data-dir":
			cfg.DataDir = *dataDir
		case "log-level":
			cfg.Log.Level = *level
		case "log-format":
			cfg.Log.Format = *format
		}
	})
	cfg = cfg.Effective()
	return cfg, *printCfg, cfg.Validate()
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// serve wires the control plane and runs it until ctx ends.
func serve(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildinfo.Collector())

	backend, err := openRegistry(cfg, logger, reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := backend.close(); err != nil {
			logger.Error("closing the registry", "error", err)
		}
	}()
	store := backend.store

	id, err := openIdentity(cfg, logger, reg)
	if err != nil {
		return err
	}
	var background sync.WaitGroup
	idCtx, stopID := context.WithCancel(context.Background())
	background.Go(func() { id.run(idCtx) })
	listenerTLS := servingTLS(ctx, cfg, id.certs, logger)

	cp := controlplane.New(controlplane.Options{
		Source: backend.source, Certificates: id.certs, Logger: logger, Registerer: reg,
		Discovery: discovery.Options{
			Grace: cfg.Discovery.Grace.D(), NotFoundGrace: cfg.Discovery.NotFoundGrace.D(), MaxNotFound: cfg.Discovery.MaxNotFound,
		},
		Server: server.Options{
			Authenticator: id.keyring, AllowUnauthenticated: cfg.XDS.AllowUnauthenticated,
			AdmissionRate: cfg.XDS.AdmissionRate, AdmissionBurst: cfg.XDS.AdmissionBurst,
			MaxWaitingStreams: cfg.XDS.MaxWaitingStreams, MaxStreamsPerPeer: cfg.XDS.MaxStreamsPerPeer,
			MaxUnknownNames: cfg.XDS.MaxUnknownNames,
		},
		ODCDSTimeout: cfg.XDS.ODCDSTimeout.D(),
	})
	cp.Start()
	// Stopped before the registry closes (deferred above, so run after):
	// nothing of the control plane may use it then.
	defer func() {
		cp.Stop()
		stopID()
		background.Wait()
	}()
	xdsServer, disc := cp.Server, cp.Discovery

	xdsLis, err := net.Listen("tcp", cfg.XDS.Address)
	if err != nil {
		return fmt.Errorf("xds: listen on %s: %w (is another meshd running? change xds.address or --xds-address)", cfg.XDS.Address, err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTP.Address)
	if err != nil {
		_ = xdsLis.Close()
		return fmt.Errorf("http: listen on %s: %w (is another meshd running? change http.address or --http-address)", cfg.HTTP.Address, err)
	}

	var serving atomic.Bool
	hosts := ops.NewHosts(httpLis.Addr(), cfg.HTTP.AllowedHosts)
	httpServer := &http.Server{
		Handler: ops.Handler(ops.Deps{
			Logger: logger, API: api.NewHandler(store, logger), Gatherer: reg, Store: store,
			Proxies: xdsServer, VIPs: disc, Certs: id.certs, Config: cfg, Hosts: &hosts, XDSAddress: xdsLis.Addr().String(),
			Access: api.Access{Tokens: id.keyring, Open: cfg.HTTP.AllowUnauthenticated, OpenReads: cfg.HTTP.OpenReads},
			Checks: map[string]func() ops.Check{
				"registry": backend.check,
				"secrets":  id.check,
				"xds":      func() ops.Check { return ops.Check{OK: serving.Load()} },
			},
		}),
		TLSConfig:         listenerTLS(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	grpcOpts := server.GRPCOptions(cfg.XDS.MaxStreamsPerConnection)
	if c := listenerTLS(); c != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(c)))
	}
	grpcServer := grpc.NewServer(grpcOpts...)
	cp.Register(grpcServer)

	errs := make(chan error, 2)
	go func() { errs <- grpcServer.Serve(xdsLis) }()
	go func() {
		if httpServer.TLSConfig != nil {
			errs <- httpServer.ServeTLS(httpLis, "", "")
			return
		}
		errs <- httpServer.Serve(httpLis)
	}()
	serving.Store(true)
	if cfg.InsecureOnPurpose && (!config.Loopback(cfg.XDS.Address) || !config.Loopback(cfg.HTTP.Address)) {
		logger.Warn("serving beyond loopback with insecure_on_purpose: whatever TLS and tokens are off is open to the network",
			"tls", cfg.TLS.Enabled, "xds_allow_unauthenticated", cfg.XDS.AllowUnauthenticated, "http_allow_unauthenticated", cfg.HTTP.AllowUnauthenticated)
	}
	scheme := "http://"
	if cfg.TLS.Enabled {
		scheme = "https://"
	}
	logger.Info("meshd is serving",
		"xds", xdsLis.Addr().String(), "http", scheme+httpLis.Addr().String(), "tls", cfg.TLS.Enabled,
		"registry", cfg.Registry.Type, "data_dir", cfg.DataDir)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-errs:
		err = fmt.Errorf("server: %w", err)
	}
	serving.Store(false)
	// Ending the control plane first ends every xDS stream, so that the
	// gRPC server's graceful stop does not wait on sidecars' streams.
	cp.Stop()
	shutdown(grpcServer, httpServer, logger)
	return err
}

// backend is the registry meshd runs on, as the REST API, discovery and
// /readyz use it.
type backend struct {
	store  registry.Store
	source registry.Source
	check  func() ops.Check
	close  func() error
}

// openRegistry opens the registry cfg.Registry.Type names. The embedded one
// is ready unless a storage failure made it refuse writes. Consul is not ready while it cannot be reached, so that a
// load balancer prefers replicas that can resolve new VIPs; streams already
// connected keep being served their last known state either way.
func openRegistry(cfg config.Config, logger *slog.Logger, reg prometheus.Registerer) (backend, error) {
	if cfg.Registry.Type == "consul" {
		c := cfg.Registry.Consul
		token, err := c.ResolveToken()
		if err != nil {
			return backend{}, err
		}
		s, err := consul.New(consul.Options{
			Address: c.Address, Token: token, Datacenter: c.Datacenter, KVPrefix: c.KVPrefix,
			AllowStale: c.StaleReads, WarningIsUp: c.WarningIsUp, WaitTime: c.WaitTime.D(),
			QueryTimeout: c.QueryTimeout.D(), DeregisterCriticalAfter: c.DeregisterCriticalAfter.D(),
			Logger: logger, Registerer: reg,
		})
		if err != nil {
			return backend{}, err
		}
		check := func() ops.Check { h := s.Health(); return ops.Check{OK: h.OK(), Detail: h} }
		return backend{store: s, source: s, check: check, close: s.Close}, nil
	}
	s, err := embedded.Open(cfg.DataDir, embedded.Options{
		Logger: logger, Registerer: reg,
		SweepInterval:                cfg.Registry.Embedded.SweepInterval.D(),
		SelfPreservationShare:        cfg.Registry.Embedded.SelfPreservationShare,
		SelfPreservationMinInstances: cfg.Registry.Embedded.SelfPreservationMinInstances,
		// Files meshd creates beside registry.db: with either, an empty
		// registry.db is a lost registry, not a new one.
		Evidence: []string{filepath.Join(cfg.DataDir, "ca"), filepath.Join(cfg.DataDir, "tokens.yaml")},
	})
	if err != nil {
		return backend{}, err
	}
	check := func() ops.Check { h := s.Health(); return ops.Check{OK: h.Failed == "", Detail: h} }
	return backend{store: s, source: s, check: check, close: s.Close}, nil
}

// shutdown lets streams and requests finish for a few seconds, then cuts them.
func shutdown(g *grpc.Server, h *http.Server, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		logger.Warn("http shutdown", "error", err)
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.Stop()
	}
}
