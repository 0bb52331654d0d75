package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/config"
	"github.com/prisma-systems/xspace-mesh/ops"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
	"github.com/prisma-systems/xspace-mesh/secrets/vault"
	"github.com/prisma-systems/xspace-mesh/token"
)

// identity is what meshd needs to authenticate streams and serve them their
// certificates.
type identity struct {
	keyring *token.Keyring
	certs   *secrets.Manager
	check   func() ops.Check
	// run keeps the certificate source going (renewals, Vault's token).
	run func(ctx context.Context)
}

// openIdentity loads (or creates) the token keyring and opens the
// certificate source cfg.Secrets names.
func openIdentity(cfg config.Config, logger *slog.Logger, reg prometheus.Registerer) (identity, error) {
	keyring, created, err := token.LoadOrCreate(cfg.Keyring(), nil)
	if err != nil {
		return identity{}, err
	}
	if created {
		logger.Info("created the token keyring; every meshd replica must use this same file", "path", cfg.Keyring())
	}
	if cfg.XDS.AllowUnauthenticated {
		logger.Warn("streams without a token are admitted (xds.allow_unauthenticated); they get clusters, never identities. Turn it off in production")
	}
	issuer, runIssuer, err := openIssuer(cfg, logger, reg)
	if err == nil {
		issuer, err = withServing(cfg, issuer)
	}
	if err != nil {
		return identity{}, err
	}
	s := cfg.Secrets
	certs := secrets.NewManager(issuer, secrets.ManagerOptions{
		Logger: logger, Registerer: reg, RenewAt: s.RenewAt, NearExpiry: s.NearExpiry.D(),
		MinBackoff: s.MinBackoff.D(), MaxBackoff: s.MaxBackoff.D(),
	})
	check := func() ops.Check {
		h := certs.Health()
		return ops.Check{OK: h.OK(), Detail: h}
	}
	run := func(ctx context.Context) {
		go runIssuer(ctx)
		certs.Run(ctx)
	}
	return identity{keyring: keyring, certs: certs, check: check, run: run}, nil
}

// openIssuer opens the certificate source, and what keeps it running.
func openIssuer(cfg config.Config, logger *slog.Logger, reg prometheus.Registerer) (secrets.Issuer, func(context.Context), error) {
	idle := func(context.Context) {}
	switch cfg.Secrets.Type {
	case "embedded":
		dir := cfg.Secrets.Embedded.Dir
		if dir == "" {
			dir = filepath.Join(cfg.DataDir, "ca")
		}
		ca, err := embedded.Open(dir, embedded.Options{Lifetime: cfg.Secrets.Embedded.Lifetime.D(), Logger: logger})
		return ca, idle, err
	case "vault":
		v := cfg.Secrets.Vault
		opts := vault.Options{
			Address: v.Address, Mount: v.Mount, Role: v.Role, ServerRole: v.ServerRole, TTL: v.TTL.D(), CACert: v.CACert,
			Timeout: v.Timeout.D(), Logger: logger, Registerer: reg,
		}
		var err error
		if v.Auth == "approle" {
			var sid string
			sid, err = v.AppRole.ResolveSecretID()
			opts.AppRole = &vault.AppRole{Mount: v.AppRole.Mount, RoleID: v.AppRole.RoleID, SecretID: sid}
		} else {
			opts.Token, err = v.ResolveToken()
		}
		if err != nil {
			return nil, nil, err
		}
		iss, err := vault.New(opts)
		if err != nil {
			return nil, nil, err
		}
		return iss, iss.Run, nil
	}
	return nil, nil, fmt.Errorf("secrets.type: %q is not supported", cfg.Secrets.Type)
}
