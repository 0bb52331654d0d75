package ops

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

func newServer(t *testing.T, ready bool) (*httptest.Server, *embedded.Store, *discovery.Discovery) {
	t.Helper()
	reg := prometheus.NewRegistry()
	store, err := embedded.Open(t.TempDir(), embedded.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	c := cache.New(server.Types...)
	disc := discovery.New(store, c, discovery.Options{Registerer: reg})
	xds := server.New(t.Context(), c, disc, server.Options{Registerer: reg})
	h := Handler(Deps{
		API: api.NewHandler(store, nil), Gatherer: reg, Store: store, Proxies: xds, VIPs: disc,
		Config: map[string]string{"data_dir": "x"},
		Checks: map[string]func() Check{
			"registry": func() Check { return Check{OK: true, Detail: store.Health()} },
			"xds":      func() Check { return Check{OK: ready} },
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, store, disc
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyz(t *testing.T) {
	for _, ready := range []bool{true, false} {
		srv, _, _ := newServer(t, ready)
		code, body := get(t, "GET", srv.URL+"/readyz")
		want := http.StatusOK
		if !ready {
			want = http.StatusServiceUnavailable
		}
		if code != want || !strings.Contains(body, `"self_preservation":false`) {
			t.Fatalf("ready=%v: %d %s", ready, code, body)
		}
	}
}

func TestDebugVIPsMergesRegistryAndDiscovery(t *testing.T) {
	srv, store, disc := newServer(t, true)
	ctx := context.Background()
	for _, in := range []registry.Instance{
		{VIP: "payments", ID: "p1", Address: "10.0.0.1", Port: 80},
		{VIP: "payments", ID: "p2", Address: "10.0.0.2", Port: 80, Status: registry.StatusDown},
	} {
		if _, err := store.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	disc.Acquire(ctx, "payments.vip")
	disc.Acquire(ctx, "ghost.vip")
	code, body := get(t, "GET", srv.URL+api.VIPStatsPath)
	var got api.VIPStatList
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
		t.Fatalf("%d %s %v", code, body, err)
	}
	want := []api.VIPStat{
		{Name: "ghost", Watched: true, Subscribers: 1},
		{Name: "payments", Instances: 2, Routable: 1, Subscribers: 1, Watched: true},
	}
	if len(got.VIPs) != 2 || got.VIPs[0] != want[0] || got.VIPs[1] != want[1] {
		t.Fatalf("debug vips = %+v, want %+v", got.VIPs, want)
	}
}

func TestErrorsAreJSON(t *testing.T) {
	srv, _, _ := newServer(t, true)
	tests := []struct {
		method, path string
		code         int
		errCode      string
	}{
		{"GET", "/nope", 404, api.CodeNotFound},
		{"POST", "/debug/vips", 405, api.CodeMethodNotAllowed},
		{"DELETE", "/readyz", 405, api.CodeMethodNotAllowed},
		{"GET", "/v1/vips/NOPE", 400, api.CodeInvalidArgument},
	}
	for _, tt := range tests {
		code, body := get(t, tt.method, srv.URL+tt.path)
		var e struct{ Error api.Error }
		if code != tt.code || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != tt.errCode {
			t.Errorf("%s %s: %d %s; want %d with code %s", tt.method, tt.path, code, body, tt.code, tt.errCode)
		}
	}
	if code, body := get(t, "GET", srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "xspace_registry_vips") {
		t.Fatalf("metrics: %d", code)
	}
	if code, body := get(t, "GET", srv.URL+api.ProxiesPath); code != 200 || !strings.Contains(body, `"proxies":[]`) {
		t.Fatalf("proxies: %d %s", code, body)
	}
}
