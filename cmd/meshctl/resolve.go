package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	// Registers HttpProtocolOptions, which clusters carry in an Any, for -o json|yaml.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

const (
	xdsEnv     = "MESHCTL_XDS"
	defaultXDS = "127.0.0.1:18000"
)

func (a *app) resolveCommand() *cobra.Command {
	xds := os.Getenv(xdsEnv)
	if xds == "" {
		xds = defaultXDS
	}
	var service, nodeID string
	cmd := &cobra.Command{
		Use:   "resolve NAME",
		Short: "Ask the control plane for a cluster over xDS, exactly as a sidecar would",
		Long: `Resolve a name the way an Envoy sidecar does on its first request to it: open
a delta ADS stream to meshd's xDS address, subscribe to the cluster (on-demand
CDS), then to its endpoints (EDS), and print what came back and how long each
answer took. NAME is a VIP ("payments"), a cluster ("payments.vip",
"payments.svip") or a request authority ("payments:8080"); it is mapped to a
cluster the way a sidecar maps the Host header.

The xDS address is --xds, else $` + xdsEnv + `, else ` + defaultXDS + `.
A name the control plane does not serve exits with code 1 and says so.`,
		Example: `  meshctl resolve payments
  meshctl resolve payments.vip -o yaml
  meshctl resolve payments --xds meshd.internal:18000 --service orders`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			cluster, ok := names.ClusterForAuthority(args[0])
			if !ok {
				return usageError{fmt.Sprintf("%q is not a VIP, a cluster name or an authority such as payments:8080", args[0])}
			}
			conn, err := grpc.NewClient(xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return usageError{fmt.Sprintf("--xds %q: %v", xds, err)}
			}
			defer func() { _ = conn.Close() }()
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			defer cancel()
			node := &corev3.Node{Id: nodeID, Cluster: service}
			res, err := probe.Resolve(ctx, conn, node, cluster)
			if errors.Is(err, probe.ErrNotFound) {
				return fmt.Errorf("%s: the control plane does not serve this cluster (no such VIP, plaintext not allowed, or .svip not served yet)", cluster)
			}
			if err != nil {
				return fmt.Errorf("%w (is meshd's xDS at %s? set --xds or $%s)", err, xds, xdsEnv)
			}
			return a.emitResolved(cluster, res)
		}),
	}
	cmd.Flags().StringVar(&xds, "xds", xds, "meshd's xDS gRPC address (host:port)")
	cmd.Flags().StringVar(&service, "service", "meshctl", "service the probing node claims to be (node cluster)")
	cmd.Flags().StringVar(&nodeID, "node-id", "meshctl-resolve", "node id the probe connects as")
	return cmd
}

func (a *app) emitResolved(cluster string, res probe.Result) error {
	if a.output == "table" {
		w := a.stdout
		fmt.Fprintf(w, "cluster %s: answered in %s, endpoints in %s\n", cluster, res.ClusterAfter, res.EndpointsAfter)
		fmt.Fprintf(w, "  lb %s, connect timeout %s\n", res.Cluster.GetLbPolicy(), res.Cluster.GetConnectTimeout().AsDuration())
		return a.emit(nil, endpointTable(res))
	}
	pj := protojson.MarshalOptions{UseProtoNames: true} // Envoy's field names, as in its docs
	c, err := pj.Marshal(res.Cluster)
	if err != nil {
		return err
	}
	e, err := pj.Marshal(res.Endpoints)
	if err != nil {
		return err
	}
	return a.emit(map[string]any{
		"cluster":            json.RawMessage(c),
		"endpoints":          json.RawMessage(e),
		"cluster_after_ms":   float64(res.ClusterAfter.Microseconds()) / 1000,
		"endpoints_after_ms": float64(res.EndpointsAfter.Microseconds()) / 1000,
	}, nil)
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
