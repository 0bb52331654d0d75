package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
)

func (a *app) bootstrapCommand() *cobra.Command {
	xds := os.Getenv(xdsEnv)
	if xds == "" {
		xds = defaultXDS
	}
	var (
		grpc               bool
		service, instance  string
		tokenFile, out     string
		outbound, inbound  uint32
		appPort, adminPort uint32
	)
	cmd := &cobra.Command{
		Use:   "bootstrap --service NAME --instance ID [--inbound-port N --app-port N] [--token-file FILE] | --grpc --service NAME",
		Short: "Write the bootstrap an Envoy sidecar (or a proxyless gRPC client) starts from",
		Long: `Write the bootstrap an Envoy sidecar starts from. It is generic: it names
no VIP. Envoy connects to meshd over delta ADS and receives everything else
from it: its outbound listener on 127.0.0.1:--outbound-port (the
application's HTTP proxy: send requests with Host: <vip>, <vip>.vip or
<vip>.svip), and, with --inbound-port, a mutual-TLS listener on that port
(the instance's registered secure port) forwarding to the application on
127.0.0.1:--app-port. Clusters arrive on demand, at the first request to a
VIP.

--service is the sidecar's own service and --instance its unique node id.
--token-file holds the service's token (meshctl token issue --service
NAME); it goes into the gRPC initial metadata, so the file written is a
secret (mode 0600 with --out). Without a token meshd must allow
unauthenticated streams, and .svip clusters get no certificate. The token
is copied in: write a new bootstrap and restart Envoy before it expires.
The admin interface listens on 127.0.0.1:--admin-port only.

With --grpc, write instead the xDS bootstrap JSON that gRPC's xds:///
resolver reads (grpc-go and Node's @grpc/grpc-js-xds accept it as it is),
so that a service calls a VIP with no sidecar: it dials
"xds:///payments.vip" or "xds:///payments". Point gRPC at the file with
$GRPC_XDS_BOOTSTRAP.
--instance defaults to "<service>-grpc"; the connection is plaintext and
carries no token, so meshd must allow unauthenticated streams.

The xDS address is --xds, else $` + xdsEnv + `, else ` + defaultXDS + `. The
bootstrap goes to stdout, or to --out.`,
		Example: `  meshctl token issue --service api > api.token
  meshctl bootstrap --service api --instance api-1 --inbound-port 8443 --app-port 8080 \
      --token-file api.token --xds meshd:18000 --out /etc/envoy/envoy.yaml
  envoy -c /etc/envoy/envoy.yaml
  meshctl bootstrap --service worker --instance worker-1 --token-file worker.token > envoy.yaml
  meshctl bootstrap --grpc --service orders > xds-bootstrap.json && GRPC_XDS_BOOTSTRAP=xds-bootstrap.json ./orders`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var (
				b   []byte
				err error
			)
			if grpc {
				for _, f := range []string{"inbound-port", "app-port", "outbound-port", "admin-port", "token-file"} {
					if cmd.Flags().Changed(f) {
						return usageError{fmt.Sprintf("--%s applies to Envoy bootstraps, not --grpc", f)}
					}
				}
				b, err = bootstrap.GRPC(bootstrap.GRPCOptions{XDS: xds, Service: service, NodeID: instance})
			} else {
				var tok string
				if tok, err = readToken(tokenFile); err != nil {
					return err
				}
				if instance == "" {
					return usageError{"--instance is required: the unique node id of this sidecar, such as " + orDefault(service, "api") + "-1"}
				}
				b, err = bootstrap.Envoy(bootstrap.EnvoyOptions{
					XDS: xds, Service: service, NodeID: instance, Token: tok,
					OutboundPort: outbound, InboundPort: inbound, AppPort: appPort, AdminPort: adminPort,
				})
			}
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
			mode := os.FileMode(0o644)
			if tokenFile != "" {
				mode = 0o600
			}
			// WriteFile sets the mode only when it creates the file; a
			// token must not stay readable in a file written before.
			if err := os.WriteFile(out, b, mode); err != nil {
				return fmt.Errorf("write bootstrap: %w", err)
			}
			if err := os.Chmod(out, mode); err != nil {
				return fmt.Errorf("write bootstrap: %w", err)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&grpc, "grpc", false, "write the xDS bootstrap of a proxyless gRPC client instead")
	f.StringVar(&service, "service", "", "the sidecar's own service (its node cluster)")
	f.StringVar(&instance, "instance", "", `unique node id of this instance (with --grpc, default "<service>-grpc")`)
	f.StringVar(&instance, "node-id", "", "same as --instance")
	_ = f.MarkDeprecated("node-id", "use --instance")
	f.StringVar(&xds, "xds", xds, "meshd's xDS gRPC address (host:port)")
	f.Uint32Var(&outbound, "outbound-port", bootstrap.DefaultOutboundPort, "port of the outbound listener on 127.0.0.1, the application's proxy")
	f.Uint32Var(&inbound, "inbound-port", 0, "mutual-TLS port other sidecars call (the instance's secure port); 0: none")
	f.Uint32Var(&appPort, "app-port", 0, "the application's port on 127.0.0.1, where inbound requests go")
	f.Uint32Var(&adminPort, "admin-port", bootstrap.DefaultAdminPort, "Envoy's admin port, on 127.0.0.1 only")
	f.StringVar(&tokenFile, "token-file", "", "file holding the service's token (meshctl token issue)")
	f.StringVar(&out, "out", "", "file to write instead of stdout")
	return cmd
}

// readToken reads a token file written by meshctl token issue; "" reads nothing.
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read token: %w (write one with: meshctl token issue --service NAME > FILE)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usageError{fmt.Sprintf("token file %s is empty; write one with: meshctl token issue --service NAME > %s", file, file)}
	}
	return tok, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
