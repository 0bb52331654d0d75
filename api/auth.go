package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/prisma-systems/xspace-mesh/token"
)

// CodeUnauthenticated is the code of a 401: no token, or one that is not
// valid.
const CodeUnauthenticated = "unauthenticated"

// Verifier verifies bearer tokens: a *token.Keyring.
type Verifier interface {
	Verify(tok string) (token.Claims, error)
}

// Access says who may use meshd's HTTP surface: the REST API and the debug
// endpoints. Health and metrics endpoints are always open (Guard's public).
//
// A request that carries a token is verified (401 if the token is not
// valid) and then authorized by its role: any principal may read; a
// service token may write only instances of its own VIP (register,
// heartbeat, status, deregister); an operator token may write anything. A
// request without a token may do everything when Open, read when
// OpenReads, and nothing otherwise (401).
type Access struct {
	// Tokens verifies bearer tokens; nil accepts none.
	Tokens Verifier
	// Open lets requests without a token do everything: the zero-setup
	// development mode, for loopback (http.allow_unauthenticated).
	Open bool
	// OpenReads lets requests without a token read (http.open_reads).
	OpenReads bool
}

// Principal is who made a request.
type Principal struct {
	// Role and Name are the verified token's; empty for a request without
	// a token.
	Role token.Role `json:"role,omitempty"`
	Name string     `json:"name,omitempty"`
}

// String names the principal in logs: "operator alice", "service
// payments", or "anonymous".
func (p Principal) String() string {
	if p.Role == "" {
		return "anonymous"
	}
	return string(p.Role) + " " + p.Name
}

type principalKey struct{}

// PrincipalFrom returns who made the request whose context ctx is, as
// Guard established it; anonymous when Guard did not run.
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// Guard enforces a on every request to next except those public says are
// open to all (health, metrics). Refusals use the API's JSON error shape
// and reach nothing behind the guard.
func Guard(next http.Handler, a Access, public func(path string) bool, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "auth")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.authenticate(r)
		if err == nil {
			err = a.authorize(p, r)
		}
		var refused *Error
		if errors.As(err, &refused) {
			if refused.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="meshd"`)
			}
			logger.Info("request refused", "principal", p.String(), "method", r.Method, "path", r.URL.Path, "error", err)
			WriteError(w, refused.Status, refused.Code, refused.Message, refused.Field)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// authenticate returns the principal of r's token; anonymous without one.
func (a Access) authenticate(r *http.Request) (Principal, error) {
	raw := r.Header.Get("Authorization")
	if raw == "" {
		return Principal{}, nil
	}
	tok, ok := strings.CutPrefix(raw, "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return Principal{}, errorf(http.StatusUnauthorized, CodeUnauthenticated, "",
			`the Authorization header must be "Bearer <token>"`)
	}
	if a.Tokens == nil {
		return Principal{}, errorf(http.StatusUnauthorized, CodeUnauthenticated, "", "this meshd accepts no tokens")
	}
	c, err := a.Tokens.Verify(strings.TrimSpace(tok))
	if err != nil {
		// The keyring's error says why (expired, unknown key, ...) and
		// never echoes the token.
		return Principal{}, errorf(http.StatusUnauthorized, CodeUnauthenticated, "",
			"%v; issue a new one with meshctl token issue", err)
	}
	return Principal{Role: c.Role, Name: c.Subject}, nil
}

// authorize decides whether p may make request r.
func (a Access) authorize(p Principal, r *http.Request) error {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case p.Role == "" && (a.Open || read && a.OpenReads):
		return nil
	case p.Role == "":
		what := "a token"
		if !read {
			what = "an operator token, or the service token of the VIP whose instances it changes"
		}
		return errorf(http.StatusUnauthorized, CodeUnauthenticated, "",
			"%s %s needs %s: send \"Authorization: Bearer <token>\" (meshctl --token-file, or MESHCTL_TOKEN); issue one with meshctl token issue",
			r.Method, r.URL.Path, what)
	case read || p.Role == token.RoleOperator:
		return nil
	}
	vip, ok := instanceWrite(r)
	switch {
	case !ok:
		return errorf(http.StatusForbidden, CodeForbidden, "",
			"%s %s needs an operator token; %s may only register, renew, change the status of and deregister instances of its own VIP",
			r.Method, r.URL.Path, p)
	case vip != p.Name:
		return errorf(http.StatusForbidden, CodeForbidden, "vip",
			"%s may only act on instances of VIP %q, not %q; use the service token of %s or an operator token",
			p, p.Name, vip, vip)
	}
	return nil
}

// instanceWrite returns the VIP of a request to an instance
// (/v1/vips/{vip}/instances/{id}[/...]), read from the path as the API's
// router reads it: cleaned, segment by segment, each unescaped. An
// uncleaned path is answered by the router with a redirect, never served.
func instanceWrite(r *http.Request) (string, bool) {
	segs := strings.Split(strings.TrimPrefix(path.Clean(r.URL.EscapedPath()), "/"), "/")
	if len(segs) < 5 || segs[0] != "v1" || segs[1] != "vips" || segs[3] != "instances" {
		return "", false
	}
	vip, err := url.PathUnescape(segs[2])
	return vip, err == nil
}

// audit logs an accepted write: who made it, to which VIP, what changed.
func (h *handler) audit(r *http.Request, msg, vip string, attrs ...any) {
	h.logger.Info(msg, append([]any{"audit", true, "principal", PrincipalFrom(r.Context()).String(), "vip", vip}, attrs...)...)
}
