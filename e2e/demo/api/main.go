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
	"log/slog"
	"os"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/e2e/demo/internal/demo"
	"github.com/prisma-systems/xspace-mesh/token"
)

func main() {
	os.Exit(demo.Main("demo-api", os.Args[1:], parseFlags,
		func(c config) []any { return []any{"instance", c.Name, "vip", c.VIP} }, serve))
}

// serve registers with meshd when configured and serves until ctx ends;
// then it deregisters and drains the HTTP server.
func serve(ctx context.Context, cfg config, logger *slog.Logger) error {
	var m *member
	if cfg.Meshd != "" {
		client, err := meshdClient(cfg)
		if err != nil {
			return err
		}
		m = newMember(client, cfg, logger)
		m.start(ctx)
	} else {
		logger.Info("no --meshd; not registering")
	}
	var leave func(context.Context)
	if m != nil {
		leave = func(ctx context.Context) {
			if err := m.leave(ctx); err != nil {
				logger.Warn("deregistration at shutdown failed; the lease will expire", "error", err)
			}
		}
	}
	return demo.Serve(ctx, cfg.Listen, newHandler(cfg.Name, cfg.VIP, m, logger), logger, leave)
}

// meshdClient is a REST client of meshd with the configured CA and token.
func meshdClient(cfg config) (*api.Client, error) {
	o := api.ClientOptions{CAFile: cfg.CAFile}
	if cfg.TokenFile != "" {
		tok, err := token.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		o.Token = tok
	}
	hc, err := api.HTTPClient(o)
	if err != nil {
		return nil, err
	}
	return api.NewClient(cfg.Meshd, hc), nil
}
