package api_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
)

func TestClientErrorsPrintWhatTheServerWrote(t *testing.T) {
	s := newTestServer(t)
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"validation", func() error {
			_, err := s.client.Register(ctx, "payments", "web-1", api.Registration{Address: "10.0.0.1"})
			return err
		}, "invalid_argument: port: 0 is not a port; use 1 to 65535 (field port)"},
		{"url parameter", func() error {
			_, err := s.client.GetVIP(ctx, "Payments")
			return err
		}, `invalid_argument: vip in the URL: invalid VIP name: "Payments" contains "P"; only lower-case letters, digits and '-' are allowed (field vip)`},
		{"not found", func() error {
			return s.client.DeleteVIP(ctx, "nobody")
		}, `not_found: VIP "nobody" does not exist; create it with PUT /v1/vips/nobody (meshctl vip apply) or by registering an instance`},
		{"yaml", func() error {
			_, _, err := s.client.ApplyVIP(ctx, "payments", "application/yaml", []byte("policy:\n  protocl: grpc\n"))
			return err
		}, `unknown_field: unknown field "policy.protocl"; the fields allowed in policy are protocol, port, secure_port, plaintext, allowed_callers, load_balancing, hash_on, timeouts, retries, circuit_breakers, outlier_detection; did you mean protocol? (field policy.protocl)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var apiErr *api.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *api.Error", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("Error() =\n%s\nwant\n%s", err, tt.want)
			}
		})
	}
}

func TestClientErrorFromAnotherServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream connect error", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := api.NewClient(srv.URL, nil).ListVIPs(t.Context())
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadGateway {
		t.Fatalf("ListVIPs: %v, want a 502 *api.Error", err)
	}
	if want := "server answered 502 Bad Gateway: upstream connect error"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
}

func TestClientReadsDebugEndpoints(t *testing.T) {
	since := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	proxies := []api.ProxyInfo{{
		NodeID: "payments-7f9c", Service: "payments", StreamID: 42, Protocol: "delta",
		ConnectedSince: since, Clusters: []string{"orders.svip", "users.vip"},
	}}
	stats := []api.VIPStat{{Name: "orders", Instances: 3, Routable: 2, Subscribers: 1, Watched: true}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.ProxiesPath, func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.ProxyList{Proxies: proxies})
	})
	mux.HandleFunc("GET "+api.VIPStatsPath, func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.VIPStatList{VIPs: stats})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := api.NewClient(srv.URL, srv.Client())

	gotProxies, err := c.Proxies(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(proxies, gotProxies); d != "" {
		t.Errorf("Proxies (-want +got):\n%s", d)
	}
	gotStats, err := c.VIPStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(stats, gotStats); d != "" {
		t.Errorf("VIPStats (-want +got):\n%s", d)
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	api.WriteError(rec, http.StatusServiceUnavailable, api.CodeUnavailable, "not ready; the registry is loading", "")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("WriteError: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	want := `{"error":{"code":"unavailable","message":"not ready; the registry is loading"}}` + "\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}

func TestPutVIPSendsNameFromValue(t *testing.T) {
	s := newTestServer(t)
	off := false
	v, created, err := s.client.PutVIP(t.Context(), registry.VIP{Name: "ledger", Policy: registry.Policy{Plaintext: &off}})
	if err != nil || !created || v.Name != "ledger" || v.Policy.PlaintextAllowed() {
		t.Errorf("PutVIP = %+v, %v, %v", v, created, err)
	}
}
