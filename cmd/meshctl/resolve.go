package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	// Registers HttpProtocolOptions, which clusters carry in an Any, for -o json|yaml.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/token"
	"github.com/prisma-systems/xspace-mesh/xds/probe"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

const (
	xdsEnv     = "MESHCTL_XDS"
	defaultXDS = "127.0.0.1:18000"
)

func (a *app) resolveCommand() *cobra.Command {
	var service, nodeID, xds string
	cmd := &cobra.Command{
		Use:   "resolve NAME",
		Short: "Ask the control plane for a cluster over xDS, exactly as a sidecar would",
		Long: `Resolve a name the way an Envoy sidecar does on its first request to it: open
a delta ADS stream to meshd's xDS address, subscribe to the cluster (on-demand
CDS), then to its endpoints (EDS), and print what came back and how long each
answer took, with the route sidecars apply to it (request timeout, retries),
the SDS secrets a .svip cluster needs (names, never keys), and the
registry's health. NAME is a VIP ("payments"), a cluster ("payments.vip",
"payments.svip") or a request authority ("payments:8080"); it is mapped to a
cluster the way a sidecar maps the Host header.

meshctl asks the meshd named by --server: it reads that meshd's xDS address
from /debug/info (--xds, else $` + xdsEnv + `, overrides it), speaks TLS to it
when the server is https (same trust as the REST API) and sends the token
(--token-file, $MESHCTL_TOKEN) on the stream, as a sidecar does. With a
service token, --service defaults to its service.

A name the control plane does not serve exits with code 1 and says why: no
such VIP, plaintext not allowed, or the registry unreachable.`,
		Example: `  meshctl resolve payments
  meshctl resolve payments.svip -o yaml --token-file orders.token
  meshctl resolve payments --server https://meshd.internal:18080 --ca-file ca.crt --token-file ops.token`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			cluster, ok := names.ClusterForAuthority(args[0])
			if !ok {
				return usageError{fmt.Sprintf("%q is not a VIP, a cluster name or an authority such as payments:8080", args[0])}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			defer cancel()
			if !cmd.Flags().Changed("xds") {
				xds = os.Getenv(xdsEnv)
			}
			addr, err := a.xdsAddress(ctx, xds)
			if err != nil {
				return err
			}
			conn, err := a.dialXDS(addr)
			if err != nil {
				return usageError{fmt.Sprintf("--xds %q: %v", addr, err)}
			}
			defer func() { _ = conn.Close() }()
			if !cmd.Flags().Changed("service") {
				service = a.tokenService(service)
			}
			node := &corev3.Node{Id: nodeID, Cluster: service}
			res, err := probe.Resolve(ctx, conn, node, cluster)
			if errors.Is(err, probe.ErrNotFound) {
				return a.whyNotServed(ctx, cluster)
			}
			if err != nil {
				if h := a.tlsHint(err); h != "" {
					return fmt.Errorf("%w\n%s", err, h)
				}
				return fmt.Errorf("%w (is meshd's xDS at %s? set --xds or $%s)", err, addr, xdsEnv)
			}
			return a.emitResolved(a.resolved(ctx, cluster, res))
		}),
	}
	cmd.Flags().StringVar(&xds, "xds", "", "meshd's xDS gRPC address (host:port); default: the one meshd reports at "+api.InfoPath)
	cmd.Flags().StringVar(&service, "service", "meshctl", "service the probing node claims to be (node cluster); default: a service token's own")
	cmd.Flags().StringVar(&nodeID, "node-id", "meshctl-resolve", "node id the probe connects as")
	return cmd
}

// xdsAddress is flag (--xds or $MESHCTL_XDS) when set, else the xDS address
// the server reports, its unspecified host replaced by the server's, else,
// from a meshd too old to report it, the default.
func (a *app) xdsAddress(ctx context.Context, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	info, err := a.client().Info(ctx)
	var apiErr *api.Error
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return defaultXDS, nil
	}
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(info.XDSAddress)
	if err != nil {
		return "", fmt.Errorf("meshd reports xDS at %q: %w; set --xds", info.XDSAddress, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		u, _ := url.Parse(a.server) // checked by checkGlobals
		host = u.Hostname()
	}
	return net.JoinHostPort(host, port), nil
}

// tokenService is the service of a service token, else def.
func (a *app) tokenService(def string) string {
	if c, err := token.Inspect(a.conn.token); err == nil && c.Service != "" {
		return c.Service
	}
	return def
}

// whyNotServed explains a cluster meshd answered as not found, asking the
// REST API about its VIP: a registry outage is not "no such VIP".
func (a *app) whyNotServed(ctx context.Context, cluster string) error {
	vip, secure, _ := names.ParseCluster(cluster)
	v, err := a.client().GetVIP(ctx, vip)
	var apiErr *api.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return fmt.Errorf("%s: no such VIP %q (meshctl vip list shows those there are)", cluster, vip)
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable:
		return fmt.Errorf("%s: not served now, and the registry is unreachable (%s): meshd cannot tell whether VIP %q exists", cluster, apiErr.Message, vip)
	case err != nil:
		return fmt.Errorf("%s: the control plane does not serve this cluster, and asking the REST API why failed: %w", cluster, err)
	case !secure && !v.Policy.PlaintextAllowed():
		return fmt.Errorf("%s: VIP %q serves mutual TLS only (plaintext: false); call %s", cluster, vip, names.Cluster(vip, true))
	}
	return fmt.Errorf("%s: the control plane does not serve this cluster although VIP %q exists (a registry outage, or .svip not served yet: see meshctl check)", cluster, vip)
}

// resolution is what meshctl resolve shows, in the order it shows it.
type resolution struct {
	Cluster          json.RawMessage `json:"cluster"`
	Endpoints        json.RawMessage `json:"endpoints"`
	Route            json.RawMessage `json:"route,omitempty"`
	RouteNote        string          `json:"route_note,omitempty"`
	Secrets          []string        `json:"secrets,omitempty"`
	Registry         string          `json:"registry,omitempty"`
	ClusterAfterMS   float64         `json:"cluster_after_ms"`
	EndpointsAfterMS float64         `json:"endpoints_after_ms"`

	name  string
	res   probe.Result
	route *routev3.Route
}

// resolved adds to what xDS answered what the REST API knows: the VIP's
// route as sidecars apply it, and the registry's health.
func (a *app) resolved(ctx context.Context, cluster string, res probe.Result) resolution {
	r := resolution{
		name: cluster, res: res, Secrets: sdsSecrets(res),
		ClusterAfterMS:   float64(res.ClusterAfter.Microseconds()) / 1000,
		EndpointsAfterMS: float64(res.EndpointsAfter.Microseconds()) / 1000,
	}
	vip, _, _ := names.ParseCluster(cluster)
	if v, err := a.client().GetVIP(ctx, vip); err == nil {
		rc := translate.OutboundRouteConfiguration([]registry.VIP{v})
		r.route = rc.GetVirtualHosts()[0].GetRoutes()[0]
		if !translate.HasOwnRoute(v) {
			r.RouteNote = "the platform defaults: the VIP's policy sets no route of its own"
		}
	} else {
		r.RouteNote = "unknown: " + err.Error()
	}
	if rd, err := a.client().Readiness(ctx); err == nil {
		if c, ok := rd.Checks["registry"]; ok {
			r.Registry = "healthy"
			if !c.OK {
				r.Registry = "unhealthy: " + string(c.Detail)
			}
		}
	}
	return r
}

// sdsSecrets are the SDS secrets a cluster's TLS needs: for .svip, the
// caller's own certificate and the trust bundle.
func sdsSecrets(res probe.Result) []string {
	ts := res.Cluster.GetTransportSocket().GetTypedConfig()
	if ts == nil {
		return nil
	}
	var up tlsv3.UpstreamTlsContext
	if ts.UnmarshalTo(&up) != nil {
		return nil
	}
	var out []string
	for _, s := range up.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
		out = append(out, s.GetName())
	}
	if s := up.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
		out = append(out, s.GetName())
	}
	return out
}

func (a *app) emitResolved(r resolution) error {
	if a.output == "table" {
		w := a.stdout
		fmt.Fprintf(w, "cluster %s: answered in %s, endpoints in %s\n", r.name, r.res.ClusterAfter, r.res.EndpointsAfter)
		fmt.Fprintf(w, "  lb %s, connect timeout %s\n", r.res.Cluster.GetLbPolicy(), r.res.Cluster.GetConnectTimeout().AsDuration())
		fmt.Fprintf(w, "  route: %s\n", routeSummary(r.route, r.RouteNote))
		if len(r.Secrets) > 0 {
			fmt.Fprintf(w, "  secrets (SDS): %s\n", strings.Join(r.Secrets, ", "))
		}
		if r.Registry != "" {
			fmt.Fprintf(w, "  registry: %s\n", r.Registry)
		}
		if len(r.res.Endpoints.GetEndpoints()) == 0 {
			fmt.Fprintln(w, "No endpoints found: the VIP has no instance UP or DRAINING.")
			return nil
		}
		return a.emit(nil, endpointTable(r.res))
	}
	pj := protojson.MarshalOptions{UseProtoNames: true} // Envoy's field names, as in its docs
	var err error
	for _, m := range []struct {
		dst *json.RawMessage
		msg proto.Message
	}{{&r.Cluster, r.res.Cluster}, {&r.Endpoints, r.res.Endpoints}, {&r.Route, r.route}} {
		if m.msg == nil || !m.msg.ProtoReflect().IsValid() {
			continue
		}
		if *m.dst, err = pj.Marshal(m.msg); err != nil {
			return err
		}
	}
	return a.emit(r, nil)
}

// routeSummary is the route's timeout and retries in a line.
func routeSummary(rt *routev3.Route, note string) string {
	act := rt.GetRoute()
	if act == nil {
		return note
	}
	s := "request timeout " + act.GetTimeout().AsDuration().String()
	if rp := act.GetRetryPolicy(); rp != nil {
		s += fmt.Sprintf(", %d retries on %s", rp.GetNumRetries().GetValue(), orDash(rp.GetRetryOn()))
		if pt := rp.GetPerTryTimeout(); pt != nil {
			s += ", per try " + pt.AsDuration().String()
		}
	}
	if note != "" {
		s += " (" + note + ")"
	}
	return s
}

func endpointTable(res probe.Result) func(io.Writer) {
	return func(w io.Writer) {
		row(w, "ZONE", "ADDRESS", "PORT", "HEALTH", "WEIGHT", "INSTANCE")
		for _, l := range res.Endpoints.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				row(w, l.GetLocality().GetZone(), sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())),
					e.GetHealthStatus().String(), strconv.Itoa(int(e.GetLoadBalancingWeight().GetValue())),
					e.GetEndpoint().GetHostname())
			}
		}
	}
}
