package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/token"
)

func (a *app) tokenCommand() *cobra.Command {
	group := &cobra.Command{
		Use:   "token",
		Short: "Issue the bearer tokens sidecars present to the control plane",
		Long: `Tokens authenticate a sidecar's xDS stream as one service. Only an
authenticated stream receives its service's identity certificate over SDS,
which mutual-TLS (.svip) clusters need.`,
		Example: `  meshctl token issue --service payments --ttl 720h`,
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
	}
	group.AddCommand(a.tokenIssueCommand())
	return group
}

func (a *app) tokenIssueCommand() *cobra.Command {
	var (
		service, keyring string
		ttl              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue --service NAME [--ttl 720h] [--keyring FILE]",
		Short: "Sign a token that binds a sidecar's xDS stream to one service",
		Long: `Sign a bearer token for a service's sidecars. A sidecar sends it in its
gRPC initial metadata as "authorization: Bearer <token>"; meshd then binds
the stream to that service, refuses a node claiming another service, and
serves the stream that service's identity certificate (xspace/identity) and
no other.

The token is signed with the first key of meshd's keyring file
(xds.token_keyring in meshd's config; ./data/tokens.yaml by default, created
by meshd on first start). Holding that file is the authority to issue
identities, so meshctl signs locally instead of asking meshd over HTTP:
run it where the keyring is, and keep the file at mode 0600. Every meshd
replica reading the same keyring accepts the token.`,
		Example: `  meshctl token issue --service payments
  meshctl token issue --service payments --ttl 24h --keyring /etc/xspace/tokens.yaml > payments.token`,
		Args: cobra.NoArgs,
		RunE: runE(func(*cobra.Command, []string) error {
			kr, err := token.Load(keyring, nil)
			if err != nil {
				return err
			}
			tok, err := kr.Issue(service, ttl)
			if err != nil {
				return err
			}
			claims, err := kr.Verify(tok)
			if err != nil {
				return err
			}
			out := tokenOutput{Service: claims.Service, Token: tok, ExpiresAt: claims.Expires, KeyID: claims.KeyID}
			return a.emit(out, func(w io.Writer) { fmt.Fprintln(w, tok) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "service the token is for (required)")
	f.DurationVar(&ttl, "ttl", 30*24*time.Hour, "how long the token is valid")
	f.StringVar(&keyring, "keyring", defaultKeyring, "meshd's token keyring file")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}

type tokenOutput struct {
	Service   string    `json:"service"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	KeyID     string    `json:"key_id"`
}
