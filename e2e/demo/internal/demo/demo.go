// Package demo is what the e2e demo services share: how a demo program
// starts, serves HTTP and stops, and how it checks an address flag.
package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// ShutdownTimeout bounds what a program does at shutdown: leaving the
// registry and draining its HTTP server.
const ShutdownTimeout = 5 * time.Second

// Main runs a demo program called name and returns its exit code. parse
// reads the flags, writing help to its io.Writer (exit 0 on --help, 2 on a
// bad flag); attrs are the log attributes of the configuration; run runs
// the program until its context ends on SIGINT or SIGTERM (exit 1 if it
// fails).
func Main[C any](name string, args []string, parse func([]string, io.Writer) (C, error), attrs func(C) []any,
	run func(context.Context, C, *slog.Logger) error,
) int {
	cfg, err := parse(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With(append([]any{"component", name}, attrs(cfg)...)...)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error(name+" stopped", "error", err)
		return 1
	}
	return 0
}

// Serve listens on addr and serves h until ctx ends. Then it calls
// beforeDrain, if any, and drains the server, both within ShutdownTimeout.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger, beforeDrain func(context.Context)) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("serving", "address", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP on %s: %w", addr, err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if beforeDrain != nil {
		beforeDrain(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain HTTP server: %w", err)
	}
	return nil
}

// Port checks a host:port address with a numeric port and returns the
// port; example is shown in the error.
func Port(addr, example string) (uint16, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q: %w; use host:port such as %s", addr, err, example)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return uint16(p), nil
}
