package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/internal/testlog"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/token"
)

// guarded is the API behind Guard over a real store, with the same store
// reachable unguarded to compare what is stored.
type guarded struct {
	url   string
	plain *testServer
	logs  *testlog.Buffer
}

func newGuarded(t *testing.T, kr *token.Keyring, access api.Access) *guarded {
	t.Helper()
	plain := newTestServer(t)
	logs := &testlog.Buffer{}
	logger := logs.Logger()
	access.Tokens = kr
	public := func(path string) bool { return path == "/healthz" }
	mux := http.NewServeMux()
	mux.Handle("/v1/", api.NewHandler(plain.store, logger))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := httptest.NewServer(api.Guard(mux, access, public, logger))
	t.Cleanup(srv.Close)
	for _, vip := range []string{"payments", "orders"} {
		if _, err := plain.store.Register(t.Context(), registry.Instance{VIP: vip, ID: "i1", Address: "10.0.0.1", Port: 8080}); err != nil {
			t.Fatal(err)
		}
	}
	return &guarded{url: srv.URL, plain: plain, logs: logs}
}

func (g *guarded) do(t *testing.T, method, path, tok, body string) (int, api.Error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, g.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error api.Error }
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
			t.Fatalf("%s %s: %d with a body not in the API's error shape: %s", method, path, resp.StatusCode, b)
		}
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", method, path)
		}
	}
	return resp.StatusCode, e.Error
}

// TestAuthorizationMatrix runs every endpoint of the API, on a VIP of the
// caller's own and on another, as every kind of principal, and checks the
// answer and that a refused request stored nothing.
func TestAuthorizationMatrix(t *testing.T) {
	now := time.Now()
	kr, err := token.NewKeyring([]token.Key{{ID: "k1", Secret: bytes.Repeat([]byte("k"), 32)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old, err := token.NewKeyring([]token.Key{{ID: "k1", Secret: bytes.Repeat([]byte("k"), 32)}}, func() time.Time { return now.Add(-48 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	other, err := token.NewKeyring([]token.Key{{ID: "k1", Secret: bytes.Repeat([]byte("x"), 32)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(kr *token.Keyring, role token.Role, subject string) string {
		tok, err := kr.IssueRole(role, subject, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	principals := []struct {
		name string
		tok  string
		// may: "all", "reads", "payments" (reads and payments' instances), "none"
		may  string
		code int // the refusal's status
	}{
		{"no token", "", "none", http.StatusUnauthorized},
		{"operator", issue(kr, token.RoleOperator, "alice"), "all", 0},
		{"service payments", issue(kr, token.RoleService, "payments"), "payments", http.StatusForbidden},
		{"expired", issue(old, token.RoleOperator, "alice"), "none", http.StatusUnauthorized},
		{"forged", issue(other, token.RoleOperator, "alice"), "none", http.StatusUnauthorized},
		{"garbage", "not-a-token", "none", http.StatusUnauthorized},
	}
	requests := []struct {
		method, path, body string
		write              bool
		vip                string // the VIP whose instance it changes, "" for other writes
	}{
		{"GET", "/v1/vips", "", false, ""},
		{"GET", "/v1/vips/orders", "", false, ""},
		{"GET", "/v1/vips/payments/instances", "", false, ""},
		{"PUT", "/v1/vips/payments", `{"policy":{"load_balancing":"random"}}`, true, ""},
		{"PUT", "/v1/vips/orders", `{"policy":{"load_balancing":"random"}}`, true, ""},
		{"DELETE", "/v1/vips/billing", "", true, ""},
		{"PUT", "/v1/vips/payments/instances/i2", `{"address":"10.0.0.2","port":8080}`, true, "payments"},
		{"PUT", "/v1/vips/orders/instances/i2", `{"address":"10.0.0.2","port":8080}`, true, "orders"},
		{"PUT", "/v1/vips/payments/instances/i1/heartbeat", "", true, "payments"},
		{"PUT", "/v1/vips/orders/instances/i1/heartbeat", "", true, "orders"},
		// An escaped path reaches the same VIP the router reads.
		{"PUT", "/v1/vips/%6Frders/instances/i1/heartbeat", "", true, "orders"},
		{"PUT", "/v1/vips/payments/instances/i1/status", `{"status":"DOWN"}`, true, "payments"},
		{"PUT", "/v1/vips/orders/instances/i1/status", `{"status":"DOWN"}`, true, "orders"},
		{"DELETE", "/v1/vips/payments/instances/i1", "", true, "payments"},
		{"DELETE", "/v1/vips/orders/instances/i1", "", true, "orders"},
	}
	for _, p := range principals {
		g := newGuarded(t, kr, api.Access{})
		if _, err := g.plain.store.PutVIP(t.Context(), registry.VIP{Name: "billing"}); err != nil {
			t.Fatal(err)
		}
		for _, r := range requests {
			t.Run(fmt.Sprintf("%s/%s %s", p.name, r.method, r.path), func(t *testing.T) {
				allowed := p.may == "all" || p.may == "payments" && (!r.write || r.vip == "payments")
				before := g.plain.snapshot(t)
				status, e := g.do(t, r.method, r.path, p.tok, r.body)
				switch {
				case allowed && status >= 400:
					t.Fatalf("%d %+v; want it allowed", status, e)
				case !allowed && status != p.code:
					t.Fatalf("%d %+v; want %d", status, e, p.code)
				case !allowed && r.write && !bytes.Equal(before, g.plain.snapshot(t)):
					t.Fatal("a refused write changed what is stored")
				}
				if !allowed && !strings.Contains(e.Message, "token") {
					t.Errorf("the refusal does not say what is missing: %s", e.Message)
				}
			})
		}
	}
}

// TestOpenModes: allow_unauthenticated lets requests without a token do
// everything, open_reads only read; health stays open in every mode; and
// accepted writes are logged with their principal.
func TestOpenModes(t *testing.T) {
	kr, err := token.NewKeyring([]token.Key{{ID: "k1", Secret: bytes.Repeat([]byte("k"), 32)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reads := newGuarded(t, kr, api.Access{OpenReads: true})
	if status, e := reads.do(t, "GET", "/v1/vips", "", ""); status != http.StatusOK {
		t.Fatalf("open reads: GET = %d %+v", status, e)
	}
	if status, _ := reads.do(t, "PUT", "/v1/vips/payments/instances/i1/heartbeat", "", ""); status != http.StatusUnauthorized {
		t.Fatalf("open reads: a write without a token = %d, want 401", status)
	}
	if status, _ := reads.do(t, "GET", "/healthz", "", ""); status != http.StatusOK {
		t.Fatalf("/healthz without a token = %d", status)
	}
	open := newGuarded(t, kr, api.Access{Open: true})
	if status, e := open.do(t, "PUT", "/v1/vips/orders/instances/i9", "", `{"address":"10.0.0.9","port":8080}`); status != http.StatusOK {
		t.Fatalf("open: a write without a token = %d %+v", status, e)
	}
	tok, err := kr.IssueRole(token.RoleService, "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := open.do(t, "PUT", "/v1/vips/orders/instances/i9/heartbeat", tok, ""); status != http.StatusForbidden {
		t.Fatalf("open: payments' token on orders = %d, want 403 (a token presented is always checked)", status)
	}
	if status, _ := open.do(t, "PUT", "/v1/vips/payments/instances/i2", tok, `{"address":"10.0.0.2","port":8080}`); status != http.StatusOK {
		t.Fatalf("open: payments' token on payments = %d", status)
	}
	logs := open.logs.String()
	for _, want := range []string{
		`msg="instance registered" component=api audit=true principal=anonymous vip=orders instance=i9`,
		`msg="instance registered" component=api audit=true principal="service payments" vip=payments instance=i2`,
		`msg="request refused" component=auth principal="service payments" method=PUT path=/v1/vips/orders/instances/i9/heartbeat`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}
