package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
)

func (a *app) bootstrapCommand() *cobra.Command {
	xds := os.Getenv(xdsEnv)
	if xds == "" {
		xds = defaultXDS
	}
	var (
		grpc            bool
		service, nodeID string
		out             string
	)
	cmd := &cobra.Command{
		Use:   "bootstrap --grpc --service NAME",
		Short: "Write the xDS bootstrap a proxyless gRPC client reads to find meshd",
		Long: `Write the xDS bootstrap JSON that gRPC's xds:/// resolver reads, so that a
service calls a VIP with no sidecar: it dials "xds:///payments.vip" and gets
the VIP's route (timeout, retries), cluster and endpoints from meshd.

Point gRPC at the file with $GRPC_XDS_BOOTSTRAP (or pass its content in
$GRPC_XDS_BOOTSTRAP_CONFIG). --service is the calling service, recorded as
the node's cluster; --node-id defaults to "<service>-grpc". The xDS address
is --xds, else $` + xdsEnv + `, else ` + defaultXDS + `. The JSON goes to
stdout, or to --out.

Only gRPC bootstraps are written so far, hence --grpc is required. The
connection to meshd is plaintext; meshd must allow unauthenticated streams.`,
		Example: `  meshctl bootstrap --grpc --service orders > xds-bootstrap.json
  GRPC_XDS_BOOTSTRAP=xds-bootstrap.json ./orders
  meshctl bootstrap --grpc --service orders --xds meshd.internal:18000 --node-id orders-7f9c --out /etc/xds/bootstrap.json`,
		Args: cobra.NoArgs,
		RunE: runE(func(*cobra.Command, []string) error {
			if !grpc {
				return usageError{"--grpc is required: only proxyless gRPC bootstraps are written so far"}
			}
			b, err := bootstrap.GRPC(bootstrap.GRPCOptions{XDS: xds, Service: service, NodeID: nodeID})
			if errors.Is(err, bootstrap.ErrInvalid) {
				return usageError{err.Error()}
			}
			if err != nil {
				return err
			}
			if out == "" {
				_, err = a.stdout.Write(b)
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return fmt.Errorf("write bootstrap: %w", err)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&grpc, "grpc", false, "write the xDS bootstrap of a proxyless gRPC client")
	f.StringVar(&service, "service", "", "the calling service (node cluster)")
	f.StringVar(&nodeID, "node-id", "", `node id the client connects as (default "<service>-grpc")`)
	f.StringVar(&xds, "xds", xds, "meshd's xDS gRPC address (host:port)")
	f.StringVar(&out, "out", "", "file to write instead of stdout")
	return cmd
}
