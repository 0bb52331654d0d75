// Command demo-worker is a demo XSPACE service for the containerized-Envoy
// e2e suite: a worker that calls other VIPs through its Envoy sidecar's
// outbound listener, on demand (GET /call) or on a schedule (--every), and
// reports what came back.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/prisma-systems/xspace-mesh/e2e/demo/internal/demo"
)

func main() {
	os.Exit(demo.Main("demo-worker", os.Args[1:], parseFlags,
		func(c config) []any { return []any{"instance", c.Name, "proxy", c.Proxy} }, serve))
}

// serve runs the HTTP server, and the call loop when --every is set, until
// ctx ends; then it drains the server.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if cfg.Every > 0 {
			callEvery(ctx, newCaller(cfg), cfg, logger)
		}
	}()
	err := demo.Serve(ctx, cfg.Listen, newHandler(cfg, logger), logger, nil)
	cancel() // the loop also stops when serving failed
	<-loopDone
	return err
}
