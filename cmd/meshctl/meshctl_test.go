package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

var (
	testSince   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testProxies = []api.ProxyInfo{{
		NodeID: "orders-1", Service: "orders", StreamID: 7, Protocol: "delta", ConnectedSince: testSince,
		Clusters: []string{"a.vip", "b.vip", "c.svip", "d.vip", "payments.svip"},
	}}
	testStats = []api.VIPStat{
		{Name: "orders", Instances: 2, Routable: 2, Subscribers: 0, Watched: false},
		{Name: "payments", Instances: 3, Routable: 1, Subscribers: 4, Watched: true},
	}
)

// testEnv is meshd's API over a real embedded store, plus debug endpoints
// answering fixed data, as meshd will.
type testEnv struct {
	url    string
	store  *embedded.Store
	client *api.Client
	// failHeartbeats makes heartbeats answer 503, as a registry outage
	// would; failedHeartbeats counts those answers.
	failHeartbeats   atomic.Bool
	failedHeartbeats atomic.Int64
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, embedded.Options{})
}

// newTestEnvWith is newTestEnv with the store opened with opts.
func newTestEnvWith(t *testing.T, opts embedded.Options) *testEnv {
	t.Helper()
	store, err := embedded.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	mux := http.NewServeMux()
	mux.Handle("/", api.NewHandler(store, nil))
	mux.HandleFunc("GET "+api.ProxiesPath, func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.ProxyList{Proxies: testProxies})
	})
	mux.HandleFunc("GET "+api.VIPStatsPath, func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.VIPStatList{VIPs: testStats})
	})
	e := &testEnv{store: store}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.failHeartbeats.Load() && strings.HasSuffix(r.URL.Path, "/heartbeat") {
			e.failedHeartbeats.Add(1)
			api.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the registry is unavailable; try again shortly", "")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.url, e.client = srv.URL, api.NewClient(srv.URL, srv.Client())
	return e
}

// meshctl runs the command in-process against the test server.
func (e *testEnv) meshctl(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return e.meshctlCtx(t.Context(), stdin, args...)
}

func (e *testEnv) meshctlCtx(ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"--server", e.url}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (e *testEnv) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := e.meshctl(t, "", args...)
	if code != exitOK {
		t.Fatalf("meshctl %s: exit %d\nstderr: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

const paymentsYAML = `# payments VIP
name: payments
policy:
  protocol: grpc
  load_balancing: least_request
  timeouts:
    connect: 250ms
    request: 3s
  retries:
    attempts: 3
    "on": [connect-failure, unavailable]
`

func TestVIPApplyGetListDelete(t *testing.T) {
	e := newTestEnv(t)
	file := filepath.Join(t.TempDir(), "payments.yaml")
	if err := os.WriteFile(file, []byte(paymentsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	// least_request, and a retry condition gRPC does not know, are served
	// to proxyless gRPC clients as the nearest thing they have; apply and
	// get say so.
	notes := `  proxyless gRPC clients:
    load_balancing: grpc-go uses least_request; grpc-js-xds has none and uses round_robin
    retries.on: gRPC clients retry on unavailable only; they ignore connect-failure
    timeouts.request: gRPC clients end every call 3s after it starts, streaming calls included (max_stream_duration); use 0s for a VIP with long-lived streams
`
	if out := e.mustRun(t, "vip", "apply", "-f", file); out != "vip/payments created\n"+notes {
		t.Errorf("first apply printed %q", out)
	}
	if out := e.mustRun(t, "vip", "apply", "-f", file); out != "vip/payments unchanged\n"+notes {
		t.Errorf("second apply printed %q", out)
	}
	stored, err := e.store.GetVIP(t.Context(), "payments")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Policy.Protocol != registry.GRPC || stored.Policy.Timeouts.Connect.D() != 250*time.Millisecond {
		t.Errorf("stored policy %+v does not match the file", stored.Policy)
	}

	var got registry.VIP
	if err := yaml.UnmarshalStrict([]byte(e.mustRun(t, "vip", "get", "payments", "-o", "yaml")), &got); err != nil {
		t.Fatalf("vip get -o yaml: %v", err)
	}
	if d := cmp.Diff(stored, got); d != "" {
		t.Errorf("vip get -o yaml (-stored +printed):\n%s", d)
	}
	table, found := strings.CutSuffix(e.mustRun(t, "vip", "get", "payments"), notes)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if !found || len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") ||
		!slices.Equal(strings.Fields(lines[1]), []string{"payments", "grpc", "least_request", "true", "-", "-", "250ms", "3s", "3", "off"}) {
		t.Errorf("vip get table:\n%s", table)
	}

	code, _, stderr := e.meshctl(t, "", "vip", "apply", "-f", "-")
	if code != exitFailure || !strings.Contains(stderr, "holds no VIP") {
		t.Errorf("apply of an empty stdin: exit %d, stderr %q", code, stderr)
	}

	var list []registry.VIP
	if err := json.Unmarshal([]byte(e.mustRun(t, "vip", "list", "-o", "json")), &list); err != nil || len(list) != 1 {
		t.Fatalf("vip list -o json = %v, %v", list, err)
	}
	if out := e.mustRun(t, "vip", "delete", "payments"); out != "vip/payments deleted\n" {
		t.Errorf("vip delete printed %q", out)
	}
	if out := e.mustRun(t, "vip", "list", "-o", "json"); out != "[]\n" {
		t.Errorf("vip list -o json after delete = %q, want []", out)
	}
}

func TestVIPApplyFromStdinSeveralDocuments(t *testing.T) {
	e := newTestEnv(t)
	stdin := paymentsYAML + "---\n# orders\n---\n" + `{"name": "orders", "policy": {"protocol": "http2"}}` + "\n"
	code, stdout, stderr := e.meshctl(t, stdin, "vip", "apply", "-f", "-", "-o", "yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var printed []registry.VIP
	if err := yaml.UnmarshalStrict([]byte(stdout), &printed); err != nil || len(printed) != 2 {
		t.Fatalf("printed %q: %v", stdout, err)
	}
	if printed[0].Name != "payments" || printed[1].Name != "orders" || printed[1].Policy.Protocol != registry.HTTP2 {
		t.Errorf("printed %+v", printed)
	}
	vips, err := e.store.ListVIPs(t.Context())
	if err != nil || len(vips) != 2 {
		t.Errorf("stored %v, %v; want orders and payments", vips, err)
	}
}

func TestInstanceRegisterListStatusDeregister(t *testing.T) {
	e := newTestEnv(t)
	out := e.mustRun(t, "instance", "register", "payments", "--id", "web-1", "--address", "10.0.0.12", "--port", "8080",
		"--secure-port", "8443", "--zone", "eu-west-1a", "--weight", "10", "--ttl", "20s",
		"--meta", "version=1.4.2", "--meta", "track=canary")
	if !strings.HasPrefix(out, "VIP") || !strings.Contains(out, "web-1") {
		t.Errorf("register printed:\n%s", out)
	}
	e.mustRun(t, "instance", "register", "payments", "--id", "web-2", "--address", "10.0.0.13", "--port", "8080")

	table := strings.Split(strings.TrimSpace(e.mustRun(t, "instance", "list", "payments")), "\n")
	if len(table) != 3 || !slices.Equal(strings.Fields(table[0]),
		[]string{"VIP", "ID", "ADDRESS", "PORT", "SECURE-PORT", "ZONE", "WEIGHT", "STATUS", "LEASE", "TTL", "RENEWED"}) {
		t.Fatalf("instance list table:\n%s", strings.Join(table, "\n"))
	}
	if row := strings.Fields(table[1]); !slices.Equal(row[:10], []string{"payments", "web-1", "10.0.0.12", "8080", "8443", "eu-west-1a", "10", "UP", "ok", "20s"}) {
		t.Errorf("web-1 row: %v", row)
	}

	var fromJSON, fromYAML []api.Instance
	if err := json.Unmarshal([]byte(e.mustRun(t, "instance", "list", "payments", "-o", "json")), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(e.mustRun(t, "instances", "ls", "payments", "-o", "yaml")), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fromJSON, fromYAML); d != "" || len(fromJSON) != 2 {
		t.Errorf("json and yaml listings differ (-json +yaml):\n%s", d)
	}
	want := map[string]string{"version": "1.4.2", "track": "canary"}
	if w := fromJSON[0]; w.ID != "web-1" || w.TTLSeconds != 20 || w.SecurePort != 8443 || !cmp.Equal(w.Metadata, want) {
		t.Errorf("web-1 as json: %+v", w)
	}

	e.mustRun(t, "instance", "status", "payments", "web-1", "draining")
	insts, err := e.store.Instances(t.Context(), "payments")
	if err != nil || insts[0].Status != registry.StatusDraining {
		t.Errorf("after status change: %+v, %v; want web-1 DRAINING", insts, err)
	}

	if out := e.mustRun(t, "instance", "deregister", "payments", "web-1"); out != "instance payments/web-1 deregistered\n" {
		t.Errorf("deregister printed %q", out)
	}
	insts, err = e.store.Instances(t.Context(), "payments")
	if err != nil || len(insts) != 1 || insts[0].ID != "web-2" {
		t.Errorf("after deregister: %+v, %v; want only web-2", insts, err)
	}
}

func TestServerErrorsPrintedVerbatim(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name   string
		stdin  string
		args   []string
		stderr string
	}{
		{
			"validation", "",
			[]string{"instance", "register", "payments", "--id", "web-1", "--address", "web.local", "--port", "8080"},
			`invalid_argument: address: "web.local" is not an IP address; use the instance's IPv4 or IPv6 address, e.g. 10.0.0.12 (field address)` + "\n",
		},
		{
			"not found", "",
			[]string{"instance", "deregister", "payments", "web-1"},
			`not_found: instance "web-1" of VIP "payments" is not registered (its lease may have expired); register it again with PUT /v1/vips/payments/instances/web-1` + "\n",
		},
		{
			"unknown field in a file", "name: payments\npolicy:\n  retry: {attempts: 2}\n",
			[]string{"vip", "apply", "-f", "-"},
			`unknown_field: unknown field "policy.retry"; the fields allowed in policy are protocol, port, secure_port, plaintext, allowed_callers, load_balancing, hash_on, timeouts, retries, circuit_breakers, outlier_detection (field policy.retry)` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := e.meshctl(t, tt.stdin, tt.args...)
			if code != exitFailure || stdout != "" || stderr != tt.stderr {
				t.Errorf("exit %d, stdout %q, stderr\n%s\nwant exit 1 and stderr\n%s", code, stdout, stderr, tt.stderr)
			}
		})
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	e := newTestEnv(t)
	tests := [][]string{
		{"bogus"},
		{"vip", "bogus"},
		{"vip", "get"},
		{"vip", "apply"},
		{"vip", "list", "--bad-flag"},
		{"-o", "xml", "vip", "list"},
		{"--timeout", "0s", "vip", "list"},
		{"instance", "register", "payments", "--address", "10.0.0.1"},
		{"instance", "register", "payments", "--address", "10.0.0.1", "--port", "80", "--meta", "novalue"},
		{"instance", "register", "payments", "--address", "10.0.0.1", "--port", "80", "--ttl", "1500ms"},
		{"instance", "register", "payments", "--address", "10.0.0.1", "--port", "80", "--ttl", "0s"},
		{"instance", "register", "payments", "--address", "10.0.0.1", "--port", "80", "--weight", "0"},
		{"instance", "register", "payments", "--address", "10.0.0.1", "--port", "-1"},
		{"instance", "status", "payments", "web-1"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := e.meshctl(t, "", args...)
			if code != exitUsage || !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("exit %d, stderr %q; want exit 2 and a pointer to --help", code, stderr)
			}
		})
	}
	if vips, _ := e.store.ListVIPs(t.Context()); len(vips) != 0 {
		t.Errorf("usage errors stored %v", vips)
	}
}

func TestUnreachableServer(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"--server", "http://127.0.0.1:1", "vip", "list"}, strings.NewReader(""), &out, &errOut)
	if code != exitFailure || !strings.Contains(errOut.String(), "cannot reach http://127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

func TestDebugCommands(t *testing.T) {
	e := newTestEnv(t)
	table := strings.Split(strings.TrimSpace(e.mustRun(t, "proxies")), "\n")
	if len(table) != 2 || !slices.Equal(strings.Fields(table[0]), []string{"NODE", "SERVICE", "PROTOCOL", "SINCE", "CLUSTERS"}) ||
		!slices.Equal(strings.Fields(table[1]), []string{"orders-1", "orders", "delta", "2026-03-01T12:00:00Z", "a.vip,b.vip,c.svip", "(+2", "more)"}) {
		t.Errorf("proxies table:\n%s", strings.Join(table, "\n"))
	}
	var proxies []api.ProxyInfo
	if err := json.Unmarshal([]byte(e.mustRun(t, "proxies", "-o", "json")), &proxies); err != nil || !cmp.Equal(proxies, testProxies) {
		t.Errorf("proxies -o json = %+v, %v", proxies, err)
	}
	stats := strings.Split(strings.TrimSpace(e.mustRun(t, "vip", "stats", "payments")), "\n")
	if len(stats) != 2 || !slices.Equal(strings.Fields(stats[1]), []string{"payments", "3", "1", "4", "yes"}) {
		t.Errorf("vip stats payments:\n%s", strings.Join(stats, "\n"))
	}
}

func TestDefaultID(t *testing.T) {
	id := defaultID(8080)
	if !strings.HasSuffix(id, "-8080") || registry.ValidateInstanceID(id) != nil {
		t.Errorf("defaultID(8080) = %q, want a valid id ending in -8080", id)
	}
}

// TestEveryCommandIsDocumented checks that each command's --help has a
// summary, a description and an example.
func TestEveryCommandIsDocumented(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q lacks a summary, description or example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk((&app{}).rootCommand())
}

// TestVIPAllowedCallersWarning: applying or reading a policy that names
// allowed callers while serving plaintext warns on stderr, and stdout is
// what it always is.
func TestVIPAllowedCallersWarning(t *testing.T) {
	e := newTestEnv(t)
	file := filepath.Join(t.TempDir(), "ledger.yaml")
	if err := os.WriteFile(file, []byte("name: ledger\npolicy:\n  allowed_callers: [web]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"vip", "apply", "-f", file}, {"vip", "get", "ledger"}} {
		code, _, stderr := e.meshctl(t, "", args...)
		if code != exitOK || !strings.Contains(stderr, "warning: vip/ledger: allowed_callers applies to ledger.svip only") ||
			!strings.Contains(stderr, "set plaintext: false") {
			t.Errorf("meshctl %s: exit %d, stderr %q; want a warning about ledger.vip", strings.Join(args, " "), code, stderr)
		}
	}
	if err := os.WriteFile(file, []byte("name: ledger\npolicy:\n  allowed_callers: [web]\n  plaintext: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := e.meshctl(t, "", "vip", "apply", "-f", file); code != exitOK || stderr != "" {
		t.Errorf("plaintext: false: exit %d, stderr %q; want no warning", code, stderr)
	}
}
