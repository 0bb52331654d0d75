package main

import (
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/token"
)

// meshd is the real REST API over an embedded store, with switches that
// make it refuse some requests the way a meshd still starting would.
type meshd struct {
	url    string
	client *api.Client
	// refuseRegistrations is how many registrations to answer 503 still.
	refuseRegistrations atomic.Int32
	// registrations counts the registrations that reached the API.
	registrations    atomic.Int32
	refuseDeregister atomic.Bool
}

func startMeshd(t *testing.T) *meshd {
	t.Helper()
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h := api.NewHandler(store, slog.New(slog.NewTextHandler(t.Output(), nil)))
	m := &meshd{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isRegister := r.Method == http.MethodPut && strings.Count(r.URL.Path, "/") == 5 // /v1/vips/{vip}/instances/{id}
		switch {
		case isRegister && m.refuseRegistrations.Add(-1) >= 0:
			api.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "meshd is starting", "")
			return
		case r.Method == http.MethodDelete && m.refuseDeregister.Load():
			api.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "meshd is stopping", "")
			return
		case isRegister:
			m.registrations.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	m.url, m.client = srv.URL, api.NewClient(srv.URL, srv.Client())
	return m
}

// instances lists the instances meshd holds for vip "api".
func (m *meshd) instances(t *testing.T) []api.Instance {
	t.Helper()
	insts, err := m.client.Instances(t.Context(), "api")
	if err != nil && !api.IsNotFound(err) {
		t.Fatalf("list instances: %v", err)
	}
	return insts
}

// startMember starts the membership loop of instance api-1 against m.
func startMember(t *testing.T, m *meshd) *member {
	t.Helper()
	cfg := config{
		Name: "api-1", VIP: "api", Meshd: m.url, Address: "10.1.2.3", Port: 8080, SecurePort: 15443,
		Zone: "zone-a", TTL: 2 * time.Second, Heartbeat: 50 * time.Millisecond,
	}
	mem := newMember(api.NewClient(cfg.Meshd, nil), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	mem.start(t.Context())
	t.Cleanup(func() {
		mem.stop()
		<-mem.done
	})
	return mem
}

func TestRegistersRetryingUntilMeshdAnswers(t *testing.T) {
	m := startMeshd(t)
	m.refuseRegistrations.Store(2)
	startMember(t, m)
	await.True(t, "the instance is registered", func() bool { return len(m.instances(t)) == 1 })

	want := api.Instance{
		ID: "api-1", VIP: "api", Address: "10.1.2.3", Port: 8080, SecurePort: 15443, Zone: "zone-a",
		Weight: 1, Status: registry.StatusUp, TTLSeconds: 2, Lease: registry.LeaseOK,
	}
	got := m.instances(t)[0]
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(api.Instance{}, "RegisteredAt", "RenewedAt")); diff != "" {
		t.Errorf("registered instance (-want +got):\n%s", diff)
	}
	if n := m.refuseRegistrations.Load(); n >= 0 {
		t.Errorf("%d refusals left; the instance registered without retrying", n+1)
	}
}

func TestHeartbeatsAndRegistersAgainWhenForgotten(t *testing.T) {
	m := startMeshd(t)
	startMember(t, m)
	await.True(t, "the lease is renewed", func() bool {
		insts := m.instances(t)
		return len(insts) == 1 && insts[0].RenewedAt.After(insts[0].RegisteredAt)
	})
	before := m.registrations.Load()

	// The control plane forgets the instance; the next heartbeat says so.
	if err := m.client.Deregister(t.Context(), "api", "api-1"); err != nil {
		t.Fatalf("deregister behind the demo's back: %v", err)
	}
	await.True(t, "the instance registers again", func() bool { return len(m.instances(t)) == 1 })
	if after := m.registrations.Load(); after <= before {
		t.Errorf("registrations went from %d to %d; want a new one", before, after)
	}
}

func TestLeaveDeregistersAndStopsHeartbeating(t *testing.T) {
	m := startMeshd(t)
	mem := startMember(t, m)
	srv := startAPI(t, mem)
	await.True(t, "the instance is registered", func() bool { return len(m.instances(t)) == 1 })

	m.refuseDeregister.Store(true)
	status, _, body := send(t, http.MethodPost, srv.URL+"/admin/leave", nil, "")
	if status != http.StatusBadGateway || !strings.Contains(body, "meshd is stopping") {
		t.Errorf("POST /admin/leave with meshd refusing = %d %q, want 502 with meshd's error", status, body)
	}

	m.refuseDeregister.Store(false)
	if status, _, body := send(t, http.MethodPost, srv.URL+"/admin/leave", nil, ""); status != http.StatusNoContent {
		t.Fatalf("POST /admin/leave = %d %q, want 204", status, body)
	}
	if insts := m.instances(t); len(insts) != 0 {
		t.Errorf("after leaving meshd still holds %+v", insts)
	}
	select {
	case <-mem.done:
	default:
		t.Error("the membership loop still runs after leaving")
	}
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/hello", nil, ""); status != http.StatusOK {
		t.Errorf("GET /hello after leaving = %d, want 200: the instance keeps serving", status)
	}
}

// TestMeshdClientOverTLSWithToken: with --ca-file and --token-file the
// demo registers with a meshd that serves TLS and requires tokens; with
// another service's token it is refused.
func TestMeshdClientOverTLSWithToken(t *testing.T) {
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	dir := t.TempDir()
	kr, _, err := token.LoadOrCreate(filepath.Join(dir, "tokens.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	srv := httptest.NewTLSServer(api.Guard(api.NewHandler(store, logger), api.Access{Tokens: kr}, func(string) bool { return false }, logger))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	register := func(service string) error {
		tok, err := kr.Issue(service, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokFile := filepath.Join(dir, service+".token")
		if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := meshdClient(config{Meshd: srv.URL, CAFile: caFile, TokenFile: tokFile})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Register(t.Context(), "api", "api-1", api.Registration{Address: "10.0.0.1", Port: 8080})
		return err
	}
	if err := register("api"); err != nil {
		t.Fatalf("registration with the api's token over TLS: %v", err)
	}
	var apiErr *api.Error
	if err := register("billing"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("registration with billing's token: %v; want 403", err)
	}
}
