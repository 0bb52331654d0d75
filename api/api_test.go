package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/testclock"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

// testServer is the API over a real embedded store in a temporary directory.
type testServer struct {
	url    string
	client *api.Client
	store  *embedded.Store
	clock  *testclock.Clock // the store's clock
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	clock := testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store, err := embedded.Open(t.TempDir(), embedded.Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	srv := httptest.NewServer(api.NewHandler(store, logger))
	t.Cleanup(srv.Close)
	return &testServer{url: srv.URL, client: api.NewClient(srv.URL, srv.Client()), store: store, clock: clock}
}

// send makes one raw request and returns the status, headers and body.
func (s *testServer) send(t *testing.T, method, path, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// get answers a GET of path that must succeed with its body.
func (s *testServer) get(t *testing.T, path string) []byte {
	t.Helper()
	status, _, body := s.send(t, "GET", path, "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, status, body)
	}
	return body
}

// snapshot is everything stored, as JSON: every VIP and every VIP's instances.
func (s *testServer) snapshot(t *testing.T) []byte {
	t.Helper()
	ctx := t.Context()
	vips, err := s.client.ListVIPs(ctx)
	if err != nil {
		t.Fatalf("ListVIPs: %v", err)
	}
	state := map[string]any{"vips": vips}
	for _, v := range vips {
		insts, err := s.client.Instances(ctx, v.Name)
		if err != nil {
			t.Fatalf("Instances(%s): %v", v.Name, err)
		}
		state["instances/"+v.Name] = insts
	}
	b, err := json.Marshal(state)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVIPLifecycle(t *testing.T) {
	s := newTestServer(t)
	ctx := t.Context()

	in := registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.GRPC, Port: 7001}}
	got, created, err := s.client.PutVIP(ctx, in)
	if err != nil || !created {
		t.Fatalf("PutVIP new: created=%v err=%v", created, err)
	}
	want := registry.VIP{Name: "payments", Policy: in.Policy.Normalize()}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("PutVIP returned (-want +got):\n%s", d)
	}

	in.Policy.LoadBalancing = registry.LeastRequest
	got, created, err = s.client.PutVIP(ctx, in)
	if err != nil || created {
		t.Fatalf("PutVIP replace: created=%v err=%v", created, err)
	}
	if got.Policy.LoadBalancing != registry.LeastRequest {
		t.Errorf("replaced load_balancing = %q, want least_request", got.Policy.LoadBalancing)
	}

	if got, err := s.client.GetVIP(ctx, "payments"); err != nil || got.Policy.LoadBalancing != registry.LeastRequest {
		t.Errorf("GetVIP = %+v, %v", got, err)
	}
	if _, _, err := s.client.PutVIP(ctx, registry.VIP{Name: "orders"}); err != nil {
		t.Fatal(err)
	}
	vips, err := s.client.ListVIPs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(vips))
	for i, v := range vips {
		names[i] = v.Name
	}
	if !slices.Equal(names, []string{"orders", "payments"}) {
		t.Errorf("ListVIPs names = %v, want [orders payments]", names)
	}

	if err := s.client.DeleteVIP(ctx, "orders"); err != nil {
		t.Fatalf("DeleteVIP: %v", err)
	}
	var apiErr *api.Error
	if _, err := s.client.GetVIP(ctx, "orders"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Errorf("GetVIP after delete: %v, want a 404 *api.Error", err)
	}
}

func TestVIPStatusCodes(t *testing.T) {
	s := newTestServer(t)
	body := []byte(`{"policy":{"protocol":"http2"}}`)
	status, h, b := s.send(t, http.MethodPut, "/v1/vips/payments", "application/json", body)
	if status != http.StatusCreated || h.Get("Location") != "/v1/vips/payments" {
		t.Errorf("first PUT: %d Location=%q, want 201 /v1/vips/payments; body %s", status, h.Get("Location"), b)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if status, _, b := s.send(t, http.MethodPut, "/v1/vips/payments", "application/json; charset=utf-8", body); status != http.StatusOK {
		t.Errorf("second PUT: %d, want 200; body %s", status, b)
	}
	if status, _, b := s.send(t, http.MethodGet, "/v1/vips", "", nil); status != http.StatusOK || !bytes.HasPrefix(b, []byte(`{"vips":[{"name":"payments"`)) {
		t.Errorf("GET /v1/vips: %d %s", status, b)
	}
	if status, _, b := s.send(t, http.MethodDelete, "/v1/vips/payments", "", nil); status != http.StatusNoContent || len(b) != 0 {
		t.Errorf("DELETE: %d %q, want 204 and no body", status, b)
	}
	if status, _, b := s.send(t, http.MethodGet, "/v1/vips", "", nil); status != http.StatusOK || string(b) != "{\"vips\":[]}\n" {
		t.Errorf("GET /v1/vips on an empty store: %d %s, want {\"vips\":[]}", status, b)
	}
}

func TestApplyVIPFromYAML(t *testing.T) {
	s := newTestServer(t)
	for _, ct := range []string{"application/yaml", "application/x-yaml", "text/yaml"} {
		doc := []byte(`# the payments VIP
name: payments
policy:
  protocol: grpc
  plaintext: false
  load_balancing: ring_hash
  hash_on: {header: x-user-id}
  timeouts:
    connect: 250ms
    request: 3s
  retries:
    attempts: 3
    "on": [5xx, reset]
  outlier_detection:
    consecutive_5xx: 7
`)
		got, _, err := s.client.ApplyVIP(t.Context(), "payments", ct, doc)
		if err != nil {
			t.Fatalf("ApplyVIP as %s: %v", ct, err)
		}
		p := got.Policy
		if p.Protocol != registry.GRPC || p.PlaintextAllowed() || p.LoadBalancing != registry.RingHash || p.HashOn == nil || p.HashOn.Header != "x-user-id" ||
			p.Timeouts.Connect.D() != 250*time.Millisecond || p.Timeouts.Request.D() != 3*time.Second ||
			p.Retries.Attempts != 3 || !slices.Equal(p.Retries.On, []string{"5xx", "reset"}) ||
			p.OutlierDetection == nil || p.OutlierDetection.Consecutive5xx != 7 {
			t.Errorf("ApplyVIP as %s stored %+v", ct, p)
		}
		if p.Timeouts.Idle != registry.DefaultIdleTimeout || p.OutlierDetection.MaxEjectionPercent != 50 {
			t.Errorf("ApplyVIP as %s did not normalize: %+v", ct, p)
		}
	}
}

func TestInstanceLifecycle(t *testing.T) {
	s := newTestServer(t)
	ctx := t.Context()
	reg := api.Registration{
		Address: "10.0.0.12", Port: 8080, SecurePort: 8443, Zone: "eu-west-1a", Weight: 10,
		Status: registry.StatusStarting, Metadata: map[string]string{"version": "1.4.2"}, TTLSeconds: 20,
	}
	inst, err := s.client.Register(ctx, "payments", "web-1", reg)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	want := api.Instance{
		ID: "web-1", VIP: "payments", Address: "10.0.0.12", Port: 8080, SecurePort: 8443, Zone: "eu-west-1a",
		Weight: 10, Status: registry.StatusStarting, Metadata: map[string]string{"version": "1.4.2"}, TTLSeconds: 20,
	}
	ignoreTimes := cmp.FilterPath(func(p cmp.Path) bool {
		n := p.Last().String()
		return n == ".RegisteredAt" || n == ".RenewedAt"
	}, cmp.Ignore())
	if d := cmp.Diff(want, inst, ignoreTimes); d != "" {
		t.Errorf("Register returned (-want +got):\n%s", d)
	}
	if inst.RegisteredAt.IsZero() || inst.RenewedAt.IsZero() {
		t.Errorf("Register returned zero times: %+v", inst)
	}
	if _, err := s.client.GetVIP(ctx, "payments"); err != nil {
		t.Errorf("registering into an unknown VIP did not create it: %v", err)
	}

	s.clock.Advance(time.Second)
	renewed, err := s.client.Heartbeat(ctx, "payments", "web-1")
	if err != nil || !renewed.After(inst.RenewedAt) {
		t.Errorf("Heartbeat = %v, %v; want a time after %v", renewed, err, inst.RenewedAt)
	}
	insts, err := s.client.Instances(ctx, "payments")
	if err != nil || len(insts) != 1 || !insts[0].RenewedAt.After(inst.RenewedAt) {
		t.Errorf("Instances after heartbeat = %+v, %v; want web-1 renewed", insts, err)
	}

	down, err := s.client.SetStatus(ctx, "payments", "web-1", registry.StatusDown)
	if err != nil || down.Status != registry.StatusDown {
		t.Errorf("SetStatus = %+v, %v", down, err)
	}
	minimal, err := s.client.Register(ctx, "payments", "web-2", api.Registration{Address: "fd00::2", Port: 80})
	if err != nil || minimal.Weight != 1 || minimal.Status != registry.StatusUp || minimal.TTLSeconds != 30 {
		t.Errorf("Register with defaults = %+v, %v; want weight 1, UP, ttl 30", minimal, err)
	}
	if insts, _ := s.client.Instances(ctx, "payments"); len(insts) != 2 || insts[0].Status != registry.StatusDown {
		t.Errorf("Instances = %+v, want web-1 DOWN and web-2", insts)
	}

	for _, id := range []string{"web-1", "web-2"} {
		if err := s.client.Deregister(ctx, "payments", id); err != nil {
			t.Fatalf("Deregister(%s): %v", id, err)
		}
	}
	if insts, err := s.client.Instances(ctx, "payments"); err != nil || len(insts) != 0 {
		t.Errorf("Instances after deregister = %+v, %v; want none", insts, err)
	}
	if err := s.client.DeleteVIP(ctx, "payments"); err != nil {
		t.Errorf("DeleteVIP after its instances left: %v", err)
	}
}

func TestInstanceWireFormat(t *testing.T) {
	s := newTestServer(t)
	status, _, b := s.send(t, http.MethodPut, "/v1/vips/payments/instances/web-1", "application/json",
		[]byte(`{"address":"10.0.0.1","port":80,"ttl_seconds":45}`))
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "vip", "address", "port", "weight", "status", "ttl_seconds", "registered_at", "renewed_at"} {
		if _, ok := m[k]; !ok {
			t.Errorf("response lacks %q: %s", k, b)
		}
	}
	if m["ttl_seconds"] != 45.0 || m["ttl"] != nil {
		t.Errorf("ttl on the wire: ttl_seconds=%v ttl=%v, want 45 and no ttl", m["ttl_seconds"], m["ttl"])
	}
	status, _, b = s.send(t, http.MethodPut, "/v1/vips/payments/instances/web-1/heartbeat", "", nil)
	if status != http.StatusOK || !strings.HasPrefix(string(b), `{"renewed_at":"`) {
		t.Errorf("heartbeat: %d %s", status, b)
	}
}

// brokenStore is the real store with methods that fail the way no registry
// error is expected to: an unknown error (from both ways of putting a VIP)
// and a panic. A real store cannot be made to do either on demand.
type brokenStore struct{ *embedded.Store }

func (brokenStore) PutVIP(context.Context, registry.VIP) (registry.VIP, error) {
	return registry.VIP{}, errors.New("write /var/lib/xspace/registry.db: input/output error")
}

func (b brokenStore) ApplyVIP(ctx context.Context, v registry.VIP) (registry.VIP, bool, error) {
	_, err := b.PutVIP(ctx, v)
	return registry.VIP{}, false, err
}

func (brokenStore) ListVIPs(context.Context) ([]registry.VIP, error) {
	panic("index out of range [3] with length 3")
}

func TestInternalErrorsAreLoggedAndHidden(t *testing.T) {
	s := newTestServer(t)
	logs := &bytes.Buffer{}
	srv := httptest.NewServer(api.NewHandler(brokenStore{s.store}, slog.New(slog.NewTextHandler(logs, nil))))
	defer srv.Close()
	c := api.NewClient(srv.URL, srv.Client())

	_, _, putErr := c.PutVIP(t.Context(), registry.VIP{Name: "payments"})
	_, listErr := c.ListVIPs(t.Context())
	for _, err := range []error{putErr, listErr} {
		var apiErr *api.Error
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError || apiErr.Code != api.CodeInternal {
			t.Errorf("got %v, want a 500 internal *api.Error", err)
			continue
		}
		if strings.Contains(apiErr.Message, "registry.db") || strings.Contains(apiErr.Message, "index out of range") {
			t.Errorf("message leaks internals: %q", apiErr.Message)
		}
	}
	for _, want := range []string{"input/output error", "index out of range"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 2 {
		t.Errorf("%d errors logged, want 2:\n%s", n, logs)
	}
}
