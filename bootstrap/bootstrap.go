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
	// CAFile is the path, where the client runs, of the PEM trust bundle
	// that validates meshd's serving certificate. Set: the client speaks
	// TLS to meshd. Empty: plaintext.
	CAFile string
	// TokenFile is the path, where the client runs, of a file holding the
	// service's token; the client reads it (and rereads it when it
	// changes) and sends it with every xDS request. It needs CAFile.
	TokenFile string
}

// grpcBootstrap is the part of gRPC's xDS bootstrap format (gRFC A27) the mesh uses.
type grpcBootstrap struct {
	XDSServers []xdsServer `json:"xds_servers"`
	Node       node        `json:"node"`
}

type xdsServer struct {
	ServerURI      string        `json:"server_uri"`
	ChannelCreds   []credentials `json:"channel_creds"`
	CallCreds      []credentials `json:"call_creds,omitempty"`
	ServerFeatures []string      `json:"server_features"`
}

// credentials is an entry of channel_creds (gRFC A27, A65) or call_creds
// (gRFC A97).
type credentials struct {
	Type   string            `json:"type"`
	Config map[string]string `json:"config,omitempty"`
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
// its only xDS server, speaking xDS v3, and the node's identity. A client
// using it dials "xds:///<vip>.vip" or "xds:///<vip>".
//
// Without CAFile the channel is plaintext ("insecure" channel credentials)
// and carries no token, so meshd must allow unauthenticated streams;
// grpc-go's and grpc-js-xds's xDS resolvers both accept it as it is.
//
// With CAFile the channel credentials are "tls" with that trust bundle
// (gRFC A65; grpc-go >= 1.61, internal/xds/bootstrap/tlscreds), and with
// TokenFile the call credentials are "jwt_token_file" (gRFC A97; grpc-go
// >= 1.78, which reads them only with
// GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true and only over TLS).
// grpc-js-xds (1.14) knows neither: it refuses channel_creds without an
// "insecure" or "google_default" entry, so Node clients need a meshd
// listener that allows plaintext.
func GRPC(o GRPCOptions) ([]byte, error) {
	if o.XDS == "" {
		return nil, fmt.Errorf("%w: the xDS address is empty; use host:port such as 127.0.0.1:18000", ErrInvalid)
	}
	if err := names.ValidateVIP(o.Service); err != nil {
		return nil, fmt.Errorf("%w: service: %w", ErrInvalid, err)
	}
	if o.TokenFile != "" && o.CAFile == "" {
		return nil, fmt.Errorf("%w: a token needs TLS: gRPC sends call credentials only over a secure channel; give the CA file that validates meshd's certificate too", ErrInvalid)
	}
	if o.NodeID == "" {
		o.NodeID = o.Service + "-grpc"
	}
	server := xdsServer{
		ServerURI:      o.XDS,
		ChannelCreds:   []credentials{{Type: "insecure"}},
		ServerFeatures: []string{"xds_v3"},
	}
	if o.CAFile != "" {
		server.ChannelCreds = []credentials{{Type: "tls", Config: map[string]string{"ca_certificate_file": o.CAFile}}}
	}
	if o.TokenFile != "" {
		server.CallCreds = []credentials{{Type: "jwt_token_file", Config: map[string]string{"jwt_token_file": o.TokenFile}}}
	}
	b := grpcBootstrap{XDSServers: []xdsServer{server}, Node: node{ID: o.NodeID, Cluster: o.Service}}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: encode: %w", err)
	}
	return append(out, '\n'), nil
}
