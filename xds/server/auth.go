package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
