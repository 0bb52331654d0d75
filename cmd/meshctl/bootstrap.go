package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/token"
)

// defaultKeyring is where meshd keeps its token keyring when run from the
// same directory with the default data_dir.
const defaultKeyring = "data/tokens.yaml"

func (a *app) bootstrapCommand() *cobra.Command {
	xds := os.Getenv(xdsEnv)
	if xds == "" {
		xds = defaultXDS
	}
	var (
		grpc               bool
		service, instance  string
		tokenFile, out     string
		caFile, keyring    string
		outbound, inbound  uint32
		appPort, adminPort uint32
	)
	cmd := &cobra.Command{
		Use:   "bootstrap --service NAME --instance ID [--inbound-port N --app-port N] [--token-file FILE] [--xds-ca-file PATH] | --grpc --service NAME [--xds-ca-file PATH [--token-file FILE]]",
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
The token is checked first: it must be a service token of --service, not
expired, and, when meshd's keyring is at --keyring (read only to check,
never written), signed by it.
The admin interface listens on 127.0.0.1:--admin-port only.

--xds-ca-file is the path, where Envoy runs, of the CA bundle that signs
meshd's serving certificate (meshd with tls.enabled: the embedded CA's
<data_dir>/ca/ca.crt, or Vault's CA). With it, Envoy speaks TLS to meshd
and accepts only a certificate naming the control plane; without it, the
connection is plaintext, which meshd allows on loopback only. Envoy reads
the file at start: restart it after the bundle changes.

With --grpc, write instead the xDS bootstrap JSON that gRPC's xds:///
resolver reads (grpc-go and Node's @grpc/grpc-js-xds accept it as it is),
so that a service calls a VIP with no sidecar: it dials
"xds:///payments.vip" or "xds:///payments". Point gRPC at the file with
$GRPC_XDS_BOOTSTRAP.
--instance defaults to "<service>-grpc". Without --xds-ca-file the
connection is plaintext and carries no token, so meshd must allow
unauthenticated streams. With --xds-ca-file, gRPC speaks TLS to meshd, and
with --token-file too it sends the token file's content (reread when the
file changes) with every xDS request. That is grpc-go >= 1.78 only, and
only with GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true in its
environment; grpc-js-xds (Node) supports neither TLS nor tokens to the
control plane and refuses such a bootstrap.

The xDS address is --xds, else $` + xdsEnv + `, else ` + defaultXDS + `. The
bootstrap goes to stdout, or to --out.`,
		Example: `  meshctl token issue --service api > api.token
  meshctl bootstrap --service api --instance api-1 --inbound-port 8443 --app-port 8080 \
      --token-file api.token --xds meshd:18000 --out /etc/envoy/envoy.yaml
  envoy -c /etc/envoy/envoy.yaml
  meshctl bootstrap --service worker --instance worker-1 --token-file worker.token > envoy.yaml
  meshctl bootstrap --grpc --service orders > xds-bootstrap.json && GRPC_XDS_BOOTSTRAP=xds-bootstrap.json ./orders
  meshctl bootstrap --grpc --service orders --xds meshd.internal:18000 \
      --xds-ca-file /etc/xspace/ca.crt --token-file /etc/xspace/orders.token > xds-bootstrap.json`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var (
				b   []byte
				err error
			)
			var tok string
			if tokenFile != "" {
				if tok, err = readToken(tokenFile); err != nil {
					return err
				}
				if err = a.checkToken(tok, service, keyring, cmd.Flags().Changed("keyring")); err != nil {
					return err
				}
			}
			if grpc {
				for _, f := range []string{"inbound-port", "app-port", "outbound-port", "admin-port"} {
					if cmd.Flags().Changed(f) {
						return usageError{fmt.Sprintf("--%s applies to Envoy bootstraps, not --grpc", f)}
					}
				}
				// gRPC reads the token file itself, where it runs.
				if tokenFile != "" {
					if tokenFile, err = filepath.Abs(tokenFile); err != nil {
						return err
					}
				}
				b, err = bootstrap.GRPC(bootstrap.GRPCOptions{XDS: xds, Service: service, NodeID: instance, CAFile: caFile, TokenFile: tokenFile})
			} else {
				if instance == "" {
					return usageError{"--instance is required: the unique node id of this sidecar, such as " + orDefault(service, "api") + "-1"}
				}
				b, err = bootstrap.Envoy(bootstrap.EnvoyOptions{
					XDS: xds, Service: service, NodeID: instance, Token: tok, CAFile: caFile,
					OutboundPort: outbound, InboundPort: inbound, AppPort: appPort, AdminPort: adminPort,
				})
			}
			if errors.Is(err, bootstrap.ErrInvalid) {
				return usageError{err.Error()}
			}
			if err != nil {
				return err
			}
			if b, err = a.bootstrapFormat(b, grpc); err != nil {
				return err
			}
			if out == "" {
				_, err = a.stdout.Write(b)
				return err
			}
			mode := os.FileMode(0o644)
			if tok != "" && !grpc {
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
	f.StringVar(&tokenFile, "token-file", "", "file holding the service's token (meshctl token issue); with --grpc, the path gRPC reads it from")
	f.StringVar(&caFile, "xds-ca-file", "", "path, where the client runs, of the CA bundle that validates meshd's serving certificate; set: TLS to meshd")
	f.StringVar(&keyring, "keyring", defaultKeyring, "meshd's token keyring file, read to check the token's signature when present")
	f.StringVar(&out, "out", "", "file to write instead of stdout")
	return cmd
}

// bootstrapFormat renders a bootstrap as -o asks: an Envoy bootstrap is
// YAML, or JSON with -o json (Envoy reads either); gRPC reads its bootstrap
// as JSON only.
func (a *app) bootstrapFormat(b []byte, grpc bool) ([]byte, error) {
	switch {
	case grpc && a.output == "yaml":
		return nil, usageError{"gRPC reads its xDS bootstrap as JSON only; leave -o out or use -o json"}
	case grpc || a.output != "json":
		return b, nil
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, j, "", "  "); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return append(indented.Bytes(), '\n'), nil
}

// readToken reads a token file written by meshctl token issue.
func readToken(file string) (string, error) {
	tok, err := token.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		return "", usageError{err.Error()}
	}
	return tok, err
}

// checkToken refuses a token a sidecar of service could not use: not a
// token, not a service token, another service's, expired, or, when the
// keyring is readable, not signed by it. Without a keyring at the default
// path the signature goes unchecked, and stderr says so; an explicit
// --keyring must be readable.
func (a *app) checkToken(tok, service, keyring string, explicit bool) error {
	var (
		claims token.Claims
		err    error
	)
	kr, loadErr := token.Load(keyring, nil)
	switch {
	case loadErr == nil:
		claims, err = kr.Verify(tok)
	case explicit || !errors.Is(loadErr, fs.ErrNotExist):
		return fmt.Errorf("check the token against the keyring: %w", loadErr)
	default:
		fmt.Fprintf(a.stderr, "meshctl: the token's signature is not checked: no keyring at %s (--keyring FILE checks it)\n", keyring)
		claims, err = token.Inspect(tok)
		if err == nil && time.Now().After(claims.Expires) {
			err = fmt.Errorf("%w: it expired at %s", token.ErrInvalid, claims.Expires.Format(time.RFC3339))
		}
	}
	if err != nil {
		return usageError{fmt.Sprintf("the token is not usable: %v; issue one with: meshctl token issue --service %s", err, orDefault(service, "NAME"))}
	}
	if claims.Role != token.RoleService {
		return usageError{fmt.Sprintf("the token is a %s token of %q; a sidecar needs its service's token: meshctl token issue --service %s", claims.Role, claims.Subject, orDefault(service, "NAME"))}
	}
	if claims.Service != service {
		return usageError{fmt.Sprintf("the token is for service %q, the bootstrap for %q; meshd would refuse the sidecar: meshctl token issue --service %s", claims.Service, service, orDefault(service, "NAME"))}
	}
	if left := time.Until(claims.Expires); left < 24*time.Hour {
		fmt.Fprintf(a.stderr, "meshctl: the token expires in %s (%s); the sidecar is refused after that\n", left.Round(time.Minute), claims.Expires.Format(time.RFC3339))
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
