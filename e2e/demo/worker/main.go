// Command demo-worker is a demo XSPACE service for the containerized-Envoy
// e2e suite: a worker that calls other VIPs through its Envoy sidecar's
// outbound listener, on demand (GET /call) or on a schedule (--every), and
// reports what came back.
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
)

// shutdownTimeout bounds the HTTP drain at shutdown.
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
		fmt.Fprintln(os.Stderr, "demo-worker:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo-worker", "instance", cfg.Name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("demo-worker stopped", "error", err)
		return 1
	}
	return 0
}

// serve runs the HTTP server, and the call loop when --every is set, until
// ctx ends; then it drains the server.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           newHandler(cfg, logger),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("serving", "address", lis.Addr().String(), "proxy", cfg.Proxy)

	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if cfg.Every > 0 {
			callEvery(ctx, newCaller(cfg), cfg, logger)
		}
	}()

	select {
	case err = <-errc:
		err = fmt.Errorf("serve HTTP on %s: %w", cfg.Listen, err)
	case <-ctx.Done():
		logger.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil {
			err = fmt.Errorf("drain HTTP server: %w", serr)
		}
	}
	<-loopDone
	return err
}
