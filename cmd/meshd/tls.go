package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/prisma-systems/xspace-mesh/config"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/secrets"
)

// servingHosts are the names meshd's serving certificate carries:
// tls.names, or localhost, the loopback addresses, the host name and the
// listeners' own addresses.
func servingHosts(cfg config.Config) []string {
	if len(cfg.TLS.Names) > 0 {
		return cfg.TLS.Names
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && names.ValidateHostname(h) == nil {
		hosts = append(hosts, h)
	}
	for _, addr := range []string{cfg.XDS.Address, cfg.HTTP.Address} {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				hosts = append(hosts, ip.String())
			}
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// withServing makes iss issue meshd's serving certificate too, when TLS is
// on.
func withServing(cfg config.Config, iss secrets.Issuer) (secrets.Issuer, error) {
	if !cfg.TLS.Enabled {
		return iss, nil
	}
	s, ok := iss.(secrets.ServingIssuer)
	if !ok {
		return nil, fmt.Errorf("tls.enabled: the %s certificate source cannot issue meshd's serving certificate", cfg.Secrets.Type)
	}
	return secrets.WithServing(iss, s, servingHosts(cfg)), nil
}

// servingTLS holds meshd's serving certificate for as long as meshd runs
// and returns the TLS configuration of one listener; nil when TLS is off.
// A certificate that cannot be issued now is retried by the manager;
// meshd starts anyway, not ready (/readyz), refusing handshakes until it is.
func servingTLS(ctx context.Context, cfg config.Config, certs *secrets.Manager, logger *slog.Logger) func() *tls.Config {
	if !cfg.TLS.Enabled {
		return func() *tls.Config { return nil }
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if c, err := certs.Acquire(ctx, names.ControlPlane); err != nil {
		logger.Error("no serving certificate yet; TLS handshakes fail until one is issued (retrying)", "error", err)
	} else {
		logger.Info("serving with TLS", "certificate", c, "names", servingHosts(cfg))
	}
	return certs.ServingTLS
}
