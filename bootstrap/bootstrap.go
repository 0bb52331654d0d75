// Package bootstrap builds the bootstrap files clients of xspace-mesh read
// to find the control plane: an Envoy sidecar's bootstrap YAML (Envoy), and
// the xDS bootstrap JSON of proxyless gRPC (GRPC; grpc-go's xds:///
// resolver, and gRPC in other languages, read the same format from
// $GRPC_XDS_BOOTSTRAP or $GRPC_XDS_BOOTSTRAP_CONFIG).
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/prisma-systems/xspace-mesh/names"
)

// ErrInvalid is returned (wrapped) for options that cannot make a bootstrap.
var ErrInvalid = errors.New("invalid bootstrap options")

// GRPCOptions describe one proxyless gRPC client of the mesh.
type GRPCOptions struct {
	// XDS is meshd's xDS address, host:port.
	XDS string
	// Service is the service the client is part of; it becomes the node's cluster.
	Service string
	// NodeID identifies the client to the control plane; it defaults to
	// "<service>-grpc".
	NodeID string
}

// grpcBootstrap is the part of gRPC's xDS bootstrap format (gRFC A27) the mesh uses.
type grpcBootstrap struct {
	XDSServers []xdsServer `json:"xds_servers"`
	Node       node        `json:"node"`
}

type xdsServer struct {
	ServerURI      string         `json:"server_uri"`
	ChannelCreds   []channelCreds `json:"channel_creds"`
	ServerFeatures []string       `json:"server_features"`
}

type channelCreds struct {
	Type string `json:"type"`
}

// node is the client's identity. Locality is written even though it is
// empty: grpc-js-xds (1.14) refuses a node without one ("locality field
// missing in node element", which it reports as an unrelated "Cannot read
// properties of null"); grpc-go accepts either.
type node struct {
	ID       string   `json:"id"`
	Cluster  string   `json:"cluster"`
	Locality locality `json:"locality"`
}

// locality is where the client runs (gRFC A27); the mesh uses none of it.
type locality struct{}

// GRPC returns the xDS bootstrap JSON of a proxyless gRPC client: meshd as
// its only xDS server, over plaintext, speaking xDS v3, and the node's
// identity. grpc-go's and grpc-js-xds's xDS resolvers both accept it as it
// is. A client using it dials "xds:///<vip>.vip" or "xds:///<vip>".
//
// The channel credentials are "insecure", the only type both clients
// support for meshd today (grpc-js-xds knows no "tls"); a client cannot
// present a token either, so meshd must allow unauthenticated streams.
func GRPC(o GRPCOptions) ([]byte, error) {
	if o.XDS == "" {
		return nil, fmt.Errorf("%w: the xDS address is empty; use host:port such as 127.0.0.1:18000", ErrInvalid)
	}
	if err := names.ValidateVIP(o.Service); err != nil {
		return nil, fmt.Errorf("%w: service: %w", ErrInvalid, err)
	}
	if o.NodeID == "" {
		o.NodeID = o.Service + "-grpc"
	}
	b := grpcBootstrap{
		XDSServers: []xdsServer{{
			ServerURI:      o.XDS,
			ChannelCreds:   []channelCreds{{Type: "insecure"}},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: node{ID: o.NodeID, Cluster: o.Service},
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encode: %w", err)
	}
	return append(out, '\n'), nil
}
