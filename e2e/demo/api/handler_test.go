package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// startAPI serves the demo API's handler; m may be nil (no meshd).
func startAPI(t *testing.T, m *member) *httptest.Server {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(newHandler("api-1", "api", m, logger))
	t.Cleanup(srv.Close)
	return srv
}

// send makes one request and returns the status, Content-Type and body.
func send(t *testing.T, method, url string, header http.Header, host string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if host != "" {
		req.Host = host
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
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestHello(t *testing.T) {
	srv := startAPI(t, nil)
	tests := []struct {
		name string
		path string
		xfcc []string
		want hello
	}{
		{
			name: "no client certificate",
			path: "/hello",
			want: hello{Instance: "api-1", VIP: "api", Caller: "", Host: "api.vip", Path: "/hello"},
		},
		{
			name: "one hop",
			path: "/hello",
			xfcc: []string{"By=spiffe://xspace/svc/api;Hash=abc;URI=spiffe://xspace/svc/worker"},
			want: hello{Instance: "api-1", VIP: "api", Caller: "spiffe://xspace/svc/worker", Host: "api.vip", Path: "/hello"},
		},
		{
			name: "two hops",
			path: "/hello",
			xfcc: []string{`By=spiffe://xspace/svc/gw;Hash=1;Subject="CN=web,O=x";URI=spiffe://xspace/svc/web,By=spiffe://xspace/svc/api;Hash=2;URI=spiffe://xspace/svc/worker`},
			want: hello{Instance: "api-1", VIP: "api", Caller: "spiffe://xspace/svc/worker", Host: "api.vip", Path: "/hello"},
		},
		{
			name: "two header lines",
			path: "/hello",
			xfcc: []string{"URI=spiffe://xspace/svc/web", "By=spiffe://xspace/svc/api;URI=spiffe://xspace/svc/worker"},
			want: hello{Instance: "api-1", VIP: "api", Caller: "spiffe://xspace/svc/worker", Host: "api.vip", Path: "/hello"},
		},
		{
			name: "any other path",
			path: "/v1/orders/42",
			xfcc: []string{"URI=spiffe://xspace/svc/worker"},
			want: hello{Instance: "api-1", VIP: "api", Caller: "spiffe://xspace/svc/worker", Host: "api.vip", Path: "/v1/orders/42"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, body := send(t, http.MethodGet, srv.URL+tt.path, http.Header{"X-Forwarded-Client-Cert": tt.xfcc}, "api.vip")
			if status != http.StatusOK || ctype != "application/json" {
				t.Fatalf("status %d, Content-Type %q, body %s; want 200 application/json", status, ctype, body)
			}
			var got hello
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if !strings.Contains(body, `"caller":`) {
				t.Errorf("body %s has no caller member; it must be there even when empty", body)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	srv := startAPI(t, nil)
	if status, _, body := send(t, http.MethodGet, srv.URL+"/healthz", nil, ""); status != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", status, body)
	}
}

func TestFailToggle(t *testing.T) {
	srv := startAPI(t, nil)
	fail := func(on string) int {
		status, _, _ := send(t, http.MethodPost, srv.URL+"/admin/fail?on="+on, nil, "")
		return status
	}
	if s := fail("true"); s != http.StatusNoContent {
		t.Fatalf("POST /admin/fail?on=true = %d, want 204", s)
	}
	for _, path := range []string{"/hello", "/anything"} {
		status, _, body := send(t, http.MethodGet, srv.URL+path, nil, "")
		want := "demo-api api-1: failing on purpose (POST /admin/fail?on=false to stop)"
		if status != http.StatusServiceUnavailable || strings.TrimSpace(body) != want {
			t.Errorf("GET %s while failing = %d %q, want 503 %q", path, status, body, want)
		}
	}
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/healthz", nil, ""); status != http.StatusOK {
		t.Errorf("GET /healthz while failing = %d, want 200: the process is alive", status)
	}
	if s := fail("false"); s != http.StatusNoContent {
		t.Fatalf("POST /admin/fail?on=false = %d, want 204", s)
	}
	if status, _, body := send(t, http.MethodGet, srv.URL+"/hello", nil, ""); status != http.StatusOK {
		t.Errorf("GET /hello after failing stopped = %d %q, want 200", status, body)
	}
}

func TestAdminRejectsBadRequests(t *testing.T) {
	srv := startAPI(t, nil)
	tests := []struct {
		method, path string
		want         int
		body         string
	}{
		{http.MethodPost, "/admin/fail?on=yes", http.StatusBadRequest, `on must be true or false, got "yes"`},
		{http.MethodPost, "/admin/fail?on=TRUE", http.StatusBadRequest, `got "TRUE"`},
		{http.MethodPost, "/admin/fail", http.StatusBadRequest, `got ""`},
		{http.MethodGet, "/admin/fail?on=true", http.StatusMethodNotAllowed, "GET is not allowed on /admin/fail; use POST"},
		{http.MethodGet, "/admin/leave", http.StatusMethodNotAllowed, "use POST"},
		{http.MethodPost, "/admin/other", http.StatusNotFound, "no admin endpoint at /admin/other"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, _, body := send(t, tt.method, srv.URL+tt.path, nil, "")
			if status != tt.want || !strings.Contains(body, tt.body) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tt.method, tt.path, status, body, tt.want, tt.body)
			}
		})
	}
	// A rejected toggle changed nothing.
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/hello", nil, ""); status != http.StatusOK {
		t.Errorf("GET /hello after rejected toggles = %d, want 200", status)
	}
}

func TestLeaveWithoutMeshd(t *testing.T) {
	srv := startAPI(t, nil)
	for range 2 {
		if status, _, body := send(t, http.MethodPost, srv.URL+"/admin/leave", nil, ""); status != http.StatusNoContent {
			t.Fatalf("POST /admin/leave = %d %q, want 204", status, body)
		}
	}
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/hello", nil, ""); status != http.StatusOK {
		t.Errorf("GET /hello after leaving = %d, want 200: the instance keeps serving", status)
	}
}
