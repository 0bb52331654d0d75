package server

import (
	"context"
	"errors"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/token"
)

// Authenticator verifies the bearer token of a stream.
type Authenticator interface {
	Verify(tok string) (token.Claims, error)
}

var _ Authenticator = (*token.Keyring)(nil)

// authenticate reads "authorization: Bearer <token>" from a new stream's
// metadata. It returns the service the stream is bound to, or "" for an
// unauthenticated stream where those are allowed (they receive plaintext
// clusters, never an identity secret).
func (s *Server) authenticate(ctx context.Context) (token.Claims, error) {
	var raw string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			raw = v[0]
		}
	}
	if raw == "" {
		if s.opts.AllowUnauthenticated || s.opts.Authenticator == nil {
			return token.Claims{}, nil
		}
		return token.Claims{}, status.Error(codes.Unauthenticated,
			"missing \"authorization: Bearer <token>\" metadata; issue a token with meshctl token issue --service NAME")
	}
	tok, ok := strings.CutPrefix(raw, "Bearer ")
	if !ok || s.opts.Authenticator == nil {
		return token.Claims{}, status.Error(codes.Unauthenticated, "authorization metadata must be \"Bearer <token>\"")
	}
	claims, err := s.opts.Authenticator.Verify(strings.TrimSpace(tok))
	if err != nil {
		s.metrics.authFailures.Inc()
		msg := "invalid token"
		if errors.Is(err, token.ErrInvalid) {
			msg = err.Error() // says why (expired, unknown key, ...), never echoes the token
		}
		return token.Claims{}, status.Error(codes.Unauthenticated, msg)
	}
	return claims, nil
}

// checkNode refuses a node that claims to be another service than its
// stream authenticated as, and records the authenticated service (or its
// absence) in the node's metadata, in place: go-control-plane keeps this
// node for the stream's later requests, and the cache reads the service
// from it to decide which identity secret a name means.
func (s *Server) checkNode(st *streamState, node *corev3.Node) error {
	if node == nil {
		return nil
	}
	if st.claims.Service != "" && node.GetCluster() != st.claims.Service {
		return status.Errorf(codes.PermissionDenied,
			"node %q claims service %q but its token is for %q", node.GetId(), node.GetCluster(), st.claims.Service)
	}
	if node.Metadata == nil {
		node.Metadata = &structpb.Struct{}
	}
	if node.Metadata.Fields == nil {
		node.Metadata.Fields = map[string]*structpb.Value{}
	}
	if st.claims.Service == "" {
		delete(node.Metadata.Fields, names.NodeServiceKey)
	} else {
		node.Metadata.Fields[names.NodeServiceKey] = structpb.NewStringValue(st.claims.Service)
	}
	return nil
}

// AuthenticatedService returns the service a request's stream authenticated
// as, or "" if it did not. The cache scopes identity secrets with it.
func AuthenticatedService(node *corev3.Node) string {
	return node.GetMetadata().GetFields()[names.NodeServiceKey].GetStringValue()
}
