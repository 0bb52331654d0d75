package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prisma-systems/xspace-mesh/e2e/demo/internal/demo"
)

// hello is the answer to every non-admin request.
type hello struct {
	Instance string `json:"instance"`
	VIP      string `json:"vip"`
	// Caller is the URI SAN (SPIFFE id) of the client certificate, from
	// x-forwarded-client-cert; "" when the request did not come over mTLS.
	Caller string `json:"caller"`
	Host   string `json:"host"`
	Path   string `json:"path"`
}

// service is the demo API's HTTP side.
type service struct {
	name, vip string
	member    *member // nil when not registering with meshd
	failing   atomic.Bool
	logger    *slog.Logger
}

// newHandler returns the demo API's handler. m may be nil: the instance is
// not registered with meshd and /admin/leave has nothing to do.
func newHandler(name, vip string, m *member, logger *slog.Logger) http.Handler {
	s := &service{name: name, vip: vip, member: m, logger: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("/admin/fail", s.fail)
	mux.HandleFunc("/admin/leave", s.leave)
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusNotFound, fmt.Sprintf("no admin endpoint at %s; use POST /admin/fail or POST /admin/leave", r.URL.Path))
	})
	mux.HandleFunc("/", s.hello)
	return mux
}

// hello answers any non-admin request with who served it and who called.
func (s *service) hello(w http.ResponseWriter, r *http.Request) {
	if s.failing.Load() {
		writeText(w, http.StatusServiceUnavailable,
			fmt.Sprintf("demo-api %s: failing on purpose (POST /admin/fail?on=false to stop)", s.name))
		return
	}
	xfcc := strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), ",")
	body, err := json.Marshal(hello{
		Instance: s.name,
		VIP:      s.vip,
		Caller:   xfccURI(xfcc),
		Host:     r.Host,
		Path:     r.URL.Path,
	})
	if err != nil { // a struct of strings always encodes
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.logger.Debug("hello", "method", r.Method, "host", r.Host, "path", r.URL.Path, "xfcc", xfcc)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
}

// fail turns failure mode on or off: POST /admin/fail?on=true|false.
func (s *service) fail(w http.ResponseWriter, r *http.Request) {
	if !allowPost(w, r) {
		return
	}
	var on bool
	switch v := r.URL.Query().Get("on"); v {
	case "true":
		on = true
	case "false":
	default:
		writeText(w, http.StatusBadRequest, fmt.Sprintf("query parameter on must be true or false, got %q; use POST /admin/fail?on=true", v))
		return
	}
	s.failing.Store(on)
	s.logger.Info("failure mode changed", "failing", on)
	w.WriteHeader(http.StatusNoContent)
}

// leave stops heartbeating and deregisters from meshd: POST /admin/leave.
// The instance keeps serving HTTP.
func (s *service) leave(w http.ResponseWriter, r *http.Request) {
	if !allowPost(w, r) {
		return
	}
	if s.member == nil {
		s.logger.Info("asked to leave; not registered with meshd (no --meshd)")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// Not cancelled by the client going away: a half-done leave helps nobody.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), demo.ShutdownTimeout)
	defer cancel()
	if err := s.member.leave(ctx); err != nil {
		s.logger.Error("leave failed", "error", err)
		writeText(w, http.StatusBadGateway, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// allowPost answers 405 to anything but POST and says whether to go on.
func allowPost(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodPost {
		return true
	}
	w.Header().Set("Allow", http.MethodPost)
	writeText(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use POST", r.Method, r.URL.Path))
	return false
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, text)
}
