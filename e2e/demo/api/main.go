// Command demo-api is a demo XSPACE service for the containerized-Envoy e2e
// suite: one instance of an HTTP API VIP ("api" by default), reached only
// through its Envoy sidecar.
//
// It answers every path with JSON saying which instance served the request
// and which service called it (the URI SAN Envoy puts in the
// x-forwarded-client-cert header), keeps itself registered with meshd, and
// has admin endpoints that make it fail or leave the registry on demand.
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
	"syscall"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
)

// shutdownTimeout bounds deregistration and the HTTP drain at shutdown.
const shutdownTimeout = 5 * time.Second

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-api:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo-api", "instance", cfg.Name, "vip", cfg.VIP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("demo-api stopped", "error", err)
		return 1
	}
	return 0
}

// serve listens, registers with meshd when configured, and serves until ctx
// ends; then it deregisters and drains the HTTP server.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	var m *member
	if cfg.Meshd != "" {
		m = newMember(api.NewClient(cfg.Meshd, nil), cfg, logger)
		m.start(ctx)
	} else {
		logger.Info("no --meshd; not registering")
	}
	srv := &http.Server{
		Handler:           newHandler(cfg.Name, cfg.VIP, m, logger),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("serving", "address", lis.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP on %s: %w", cfg.Listen, err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if m != nil {
		if err := m.leave(sctx); err != nil {
			logger.Warn("deregistration at shutdown failed; the lease will expire", "error", err)
		}
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain HTTP server: %w", err)
	}
	return nil
}
