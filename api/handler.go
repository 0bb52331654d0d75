// Package api is the REST API service owners use to register VIPs and
// instances, JSON in and out, and a Go client for it. It is the HTTP edge:
// the only place registry errors become status codes, always answered with
// the body {"error":{"code":...,"message":...,"field":...}}.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

type handler struct {
	store  registry.Store
	logger *slog.Logger
	mux    *http.ServeMux
}

// NewHandler returns the handler of the /v1 API over store. A nil logger discards.
func NewHandler(store registry.Store, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{store: store, logger: logger.With("component", "api"), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v1/vips", h.listVIPs)
	h.mux.HandleFunc("GET /v1/vips/{vip}", h.getVIP)
	h.mux.HandleFunc("PUT /v1/vips/{vip}", h.putVIP)
	h.mux.HandleFunc("DELETE /v1/vips/{vip}", h.deleteVIP)
	h.mux.HandleFunc("GET /v1/vips/{vip}/instances", h.listInstances)
	h.mux.HandleFunc("PUT /v1/vips/{vip}/instances/{id}", h.register)
	h.mux.HandleFunc("DELETE /v1/vips/{vip}/instances/{id}", h.deregister)
	h.mux.HandleFunc("PUT /v1/vips/{vip}/instances/{id}/heartbeat", h.heartbeat)
	h.mux.HandleFunc("PUT /v1/vips/{vip}/instances/{id}/status", h.setStatus)
	return h
}

// ServeHTTP routes r. ServeMux answers unknown paths and wrong methods in
// plain text; those answers are rewritten into the API's JSON error shape.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.recoverPanic(w, r)
	if _, pattern := h.mux.Handler(r); pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	rec := &recorder{header: http.Header{}}
	h.mux.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		WriteError(w, rec.status, CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow), "")
	case http.StatusNotFound:
		WriteError(w, rec.status, CodeNotFound, fmt.Sprintf("no endpoint at %s; the API lives under /v1/vips", r.URL.Path), "")
	default: // a redirect to the clean path
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
	}
}

func (h *handler) recoverPanic(w http.ResponseWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel compared as net/http does
		panic(p)
	}
	h.logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
	WriteError(w, http.StatusInternalServerError, CodeInternal,
		"internal error; the server logged the details, try again and report it if it persists", "")
}

// recorder captures what ServeMux answers for a request it cannot route.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// vipParam returns the {vip} of the URL if it is a valid VIP name.
func vipParam(r *http.Request) (string, error) {
	vip := r.PathValue("vip")
	return vip, checkVIPParam(vip)
}

// checkVIPParam checks the {vip} of a URL.
func checkVIPParam(vip string) error {
	if err := names.ValidateVIP(vip); err != nil {
		return errorf(http.StatusBadRequest, CodeInvalidArgument, "vip", "vip in the URL: %v", err)
	}
	return nil
}

// instanceParams returns the {vip} and {id} of the URL if both are valid.
func instanceParams(r *http.Request) (vip, id string, err error) {
	if vip, err = vipParam(r); err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	var invalid *registry.ValidationError
	if err := registry.ValidateInstanceID(id); errors.As(err, &invalid) {
		return "", "", errorf(http.StatusBadRequest, CodeInvalidArgument, "id", "id in the URL: %s", invalid.Message)
	} else if err != nil {
		return "", "", err
	}
	return vip, id, nil
}

func vipNotFound(vip string) string {
	return fmt.Sprintf("VIP %q does not exist; create it with PUT /v1/vips/%s (meshctl vip apply) or by registering an instance", vip, vip)
}

func (h *handler) listVIPs(w http.ResponseWriter, r *http.Request) {
	vips, err := h.store.ListVIPs(r.Context())
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	if vips == nil {
		vips = []registry.VIP{}
	}
	WriteJSON(w, http.StatusOK, vipList{VIPs: vips})
}

func (h *handler) getVIP(w http.ResponseWriter, r *http.Request) {
	name, err := vipParam(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	v, err := h.store.GetVIP(r.Context(), name)
	if err != nil {
		h.fail(w, r, err, vipNotFound(name))
		return
	}
	WriteJSON(w, http.StatusOK, v)
}

func (h *handler) putVIP(w http.ResponseWriter, r *http.Request) {
	name, err := vipParam(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	var v registry.VIP
	if _, err := decodeBody(w, r, &v, vipTypes); err != nil {
		h.fail(w, r, err, "")
		return
	}
	if v.Name != "" && v.Name != name {
		h.fail(w, r, errorf(http.StatusBadRequest, CodeInvalidArgument, "name",
			"name: the body names VIP %q but the URL names %q; make them match or leave name out", v.Name, name), "")
		return
	}
	v.Name = name
	stored, created, err := h.applyVIP(r.Context(), v)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	h.audit(r, "VIP policy applied", name, "created", created, "policy", stored.Policy)
	if warning := stored.Policy.CallerWarning(name); warning != "" {
		// The owner is told in the answer, as Kubernetes tells API clients
		// (a Warning header, code 299), and the operator in the log.
		h.logger.Warn("VIP policy names allowed callers but serves plaintext", "vip", name, "warning", warning)
		w.Header().Add("Warning", `299 - "`+warning+`"`)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/vips/"+name)
	}
	WriteJSON(w, status, stored)
}

// vipApplier is implemented by stores that decide, with the write, whether
// it created the VIP (the embedded one), so that of concurrent PUTs of a new
// VIP exactly one answers 201.
type vipApplier interface {
	ApplyVIP(ctx context.Context, v registry.VIP) (registry.VIP, bool, error)
}

// applyVIP puts v and reports whether it created the VIP. A store that
// cannot say so with the write is asked first; concurrent creates may then
// each answer 201.
func (h *handler) applyVIP(ctx context.Context, v registry.VIP) (registry.VIP, bool, error) {
	if a, ok := h.store.(vipApplier); ok {
		return a.ApplyVIP(ctx, v)
	}
	_, err := h.store.GetVIP(ctx, v.Name)
	created := errors.Is(err, registry.ErrNotFound)
	if err != nil && !created {
		return registry.VIP{}, false, err
	}
	stored, err := h.store.PutVIP(ctx, v)
	return stored, created, err
}

func (h *handler) deleteVIP(w http.ResponseWriter, r *http.Request) {
	name, err := vipParam(r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	err = h.store.DeleteVIP(r.Context(), name)
	if errors.Is(err, registry.ErrConflict) {
		n := "some"
		if insts, err := h.store.Instances(r.Context(), name); err == nil {
			n = fmt.Sprint(len(insts))
		}
		err = errorf(http.StatusConflict, CodeConflict, "",
			"VIP %q still has %s registered instance(s); deregister them first (meshctl instance list %s)", name, n, name)
	}
	if err != nil {
		h.fail(w, r, err, vipNotFound(name))
		return
	}
	h.audit(r, "VIP deleted", name)
	w.WriteHeader(http.StatusNoContent)
}
