package server

import (
	"context"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/token"
)

// streamState is what the server knows of one open stream.
type streamState struct {
	id       int64
	protocol string // "delta" or "sotw"
	kind     string // metric label of the stream's service: ads, cds, eds
	// typeURL is the type of a standalone service's stream ("" for ADS).
	// Requests on such streams may leave their type URL empty.
	typeURL string
	// peer is the client's address without its port, for the per-peer bound.
	peer string
	// claims are what the stream's token says; empty when unauthenticated.
	claims token.Claims
	ctx    context.Context
	since  time.Time
	// admitted says the stream passed admission; until then it is only
	// counted against its peer.
	admitted bool
	// node is the stream's node as the server made it at its first request
	// (see bindNode). Nothing writes into it afterwards.
	node *corev3.Node
	// mu guards held, and each of its heldNames: only the stream's own
	// request loop changes them, but Proxies reads them.
	mu sync.Mutex
	// held are the names the stream subscribes to, by type (typeIndex);
	// made at the type's first request.
	held [servedTypes]*heldNames
	// syncs are, by type (typeIndex), what its responses came to.
	syncs [servedTypes]*typeSync
	// prepared says Options.Nodes accepted the node. Only the stream's
	// own request loop reads or writes it.
	prepared bool
}

// heldOf returns the names the stream holds of a type; nil before its
// first request of that type, and for a type the server does not serve.
// Called with st.mu held.
func (st *streamState) heldOf(typeURL string) *heldNames {
	if i := typeIndex(typeURL); i >= 0 {
		return st.held[i]
	}
	return nil
}

// requestType is the type URL a request is about: its own, or its stream's.
func (st *streamState) requestType(typeURL string) string {
	if typeURL == "" {
		return st.typeURL
	}
	return typeURL
}

// holds reports whether the stream holds name in held.
func (st *streamState) holds(held *heldNames, name string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return held.holds(name)
}

// maxNodeBytes bounds the node a stream may present. Envoy's is a few KiB
// to a few tens of KiB (it lists its extensions); a larger one is refused
// rather than kept for the life of the stream.
const maxNodeBytes = 256 << 10

// bindNode fixes the stream's node at its first request: a copy of what
// the request carries (an empty node if nothing), keeping only the fields
// the control plane reads, with the authenticated service recorded in its
// metadata (names.NodeServiceKey), overwriting whatever the client put
// there. A node that claims another service than the stream's token is
// refused.
//
// Every request of the stream is then given this node (useNode), whatever
// it carries: a node can be named only once per stream. The server never
// writes into a node it did not make: go-control-plane hands the first
// request's node object to later requests that carry none, and the cache
// reads the nodes of waiting requests under its own lock.
func (s *Server) bindNode(st *streamState, node *corev3.Node) error {
	if st.node != nil {
		return nil
	}
	if size := proto.Size(node); size > maxNodeBytes {
		return status.Errorf(codes.InvalidArgument, "node of %d bytes; at most %d are accepted", size, maxNodeBytes)
	}
	if st.claims.Service != "" && node.GetCluster() != st.claims.Service {
		return status.Errorf(codes.PermissionDenied,
			"node %q claims service %q but its token is for %q", node.GetId(), node.GetCluster(), st.claims.Service)
	}
	own := &corev3.Node{
		Id:                   node.GetId(),
		Cluster:              node.GetCluster(),
		Locality:             node.GetLocality(),
		UserAgentName:        node.GetUserAgentName(),
		UserAgentVersionType: node.GetUserAgentVersionType(),
		ClientFeatures:       node.GetClientFeatures(),
		Metadata:             &structpb.Struct{Fields: map[string]*structpb.Value{}},
	}
	for k, v := range node.GetMetadata().GetFields() {
		own.Metadata.Fields[k] = v
	}
	delete(own.Metadata.Fields, names.NodeServiceKey)
	if st.claims.Service != "" {
		own.Metadata.Fields[names.NodeServiceKey] = structpb.NewStringValue(st.claims.Service)
	}
	// A deep copy: the client's message stays the client's.
	own = proto.Clone(own).(*corev3.Node)
	s.mu.Lock()
	st.node = own
	s.mu.Unlock()
	if sc, ok := s.cache.(streamCache); ok {
		sc.OpenStream(own)
	}
	return nil
}

// AuthenticatedService returns the service a request's stream authenticated
// as, or "" if it did not. The cache scopes identity secrets with it.
func AuthenticatedService(node *corev3.Node) string {
	return node.GetMetadata().GetFields()[names.NodeServiceKey].GetStringValue()
}
