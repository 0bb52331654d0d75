package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seen is what the stand-in sidecar received.
type seen struct {
	host, uri string
}

// startSidecar stands in for the sidecar's outbound listener: it records
// each request and answers with h.
func startSidecar(t *testing.T, h http.HandlerFunc) (*httptest.Server, <-chan seen) {
	t.Helper()
	reqs := make(chan seen, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reqs <- seen{host: r.Host, uri: r.RequestURI}:
		default:
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

// startWorker serves the worker's handler with proxy as the sidecar.
func startWorker(t *testing.T, proxy string, timeout time.Duration) *httptest.Server {
	t.Helper()
	cfg := config{Proxy: proxy, Name: "worker-1", Timeout: timeout}
	srv := httptest.NewServer(newHandler(cfg, slog.New(slog.NewTextHandler(t.Output(), nil))))
	t.Cleanup(srv.Close)
	return srv
}

// get fetches url and decodes its JSON answer into a map.
func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
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
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json; body %s", ct, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return resp.StatusCode, m
}

func callURL(worker string, q url.Values) string { return worker + "/call?" + q.Encode() }

func TestCallRelaysTheUpstreamAnswer(t *testing.T) {
	sidecar, reqs := startSidecar(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, `{"instance":"api-1"}`)
	})
	worker := startWorker(t, sidecar.Listener.Addr().String(), 5*time.Second)

	status, got := get(t, callURL(worker.URL, url.Values{"authority": {"api.svip"}, "path": {"/hello?x=1"}}))
	if status != http.StatusOK {
		t.Fatalf("status %d, body %v; want 200", status, got)
	}
	if got["status"] != float64(http.StatusTeapot) || got["body"] != `{"instance":"api-1"}` {
		t.Errorf("answer %v; want status 418 and the upstream body", got)
	}
	if ms, ok := got["latency_ms"].(float64); !ok || ms <= 0 {
		t.Errorf("latency_ms %v; want a positive number", got["latency_ms"])
	}
	if diff := cmp.Diff(seen{host: "api.svip", uri: "/hello?x=1"}, <-reqs, cmp.AllowUnexported(seen{})); diff != "" {
		t.Errorf("request at the sidecar (-want +got):\n%s", diff)
	}
}

func TestCallDefaultsPathAndCapsBody(t *testing.T) {
	big := strings.Repeat("x", maxBody+100)
	sidecar, reqs := startSidecar(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, big)
	})
	worker := startWorker(t, sidecar.Listener.Addr().String(), 5*time.Second)

	status, got := get(t, callURL(worker.URL, url.Values{"authority": {"api.vip:8080"}}))
	if status != http.StatusOK || got["status"] != float64(http.StatusOK) {
		t.Fatalf("answer %d %v; want 200 relaying 200", status, got)
	}
	if body, _ := got["body"].(string); body != big[:maxBody] {
		t.Errorf("body of %d bytes; want the first %d", len(body), maxBody)
	}
	if r := <-reqs; r.host != "api.vip:8080" || r.uri != "/" {
		t.Errorf("sidecar got Host %q URI %q; want api.vip:8080 and /", r.host, r.uri)
	}
}

func TestCallRejectsBadParameters(t *testing.T) {
	sidecar, reqs := startSidecar(t, func(http.ResponseWriter, *http.Request) {})
	worker := startWorker(t, sidecar.Listener.Addr().String(), 5*time.Second)
	tests := []struct {
		name string
		q    url.Values
		want string
	}{
		{"no authority", url.Values{"path": {"/hello"}}, "authority is required"},
		{"authority with a path", url.Values{"authority": {"api.svip/x"}}, "authority"},
		{"authority with user", url.Values{"authority": {"u@api.svip"}}, "authority"},
		{"relative path", url.Values{"authority": {"api.svip"}, "path": {"hello"}}, `path "hello" must start with /`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, got := get(t, callURL(worker.URL, tt.q))
			msg, _ := got["error"].(string)
			if status != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
				t.Errorf("answer %d %v; want 400 with an error about %q", status, got, tt.want)
			}
		})
	}
	select {
	case r := <-reqs:
		t.Errorf("a rejected call reached the sidecar: %+v", r)
	default:
	}
}

func TestCallThroughUnreachableProxy(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now
	worker := startWorker(t, addr, 5*time.Second)

	status, got := get(t, callURL(worker.URL, url.Values{"authority": {"api.svip"}, "path": {"/hello"}}))
	msg, _ := got["error"].(string)
	if status != http.StatusBadGateway || !strings.Contains(msg, "connection refused") {
		t.Errorf("answer %d %v; want 502 saying the connection was refused", status, got)
	}
	if _, ok := got["latency_ms"].(float64); !ok {
		t.Errorf("answer %v has no latency_ms", got)
	}
}

func TestCallTimesOut(t *testing.T) {
	release := make(chan struct{})
	sidecar, _ := startSidecar(t, func(http.ResponseWriter, *http.Request) { <-release })
	defer close(release) // before the sidecar closes, which waits for the handler
	worker := startWorker(t, sidecar.Listener.Addr().String(), 100*time.Millisecond)

	status, got := get(t, callURL(worker.URL, url.Values{"authority": {"api.svip"}}))
	msg, _ := got["error"].(string)
	if status != http.StatusBadGateway || !strings.Contains(msg, "Client.Timeout") {
		t.Errorf("answer %d %v; want 502 saying the call timed out", status, got)
	}
	if ms, _ := got["latency_ms"].(float64); ms < 100 {
		t.Errorf("latency_ms %v; want at least the 100ms timeout", got["latency_ms"])
	}
}

func TestHealthz(t *testing.T) {
	worker := startWorker(t, "127.0.0.1:1", time.Second)
	resp, err := http.Get(worker.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", resp.StatusCode, b)
	}
}
