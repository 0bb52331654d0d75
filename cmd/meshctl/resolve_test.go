package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/controlplane/cptest"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

// TestResolveAgainstSecureMeshd: meshctl resolve asks the meshd named by
// --server (TLS, tokens required), finds its xDS address from /debug/info,
// and shows the cluster, the endpoints a sidecar gets (DOWN left out), the
// route with the VIP's retries and timeout, the SDS secrets of .svip, and
// the registry's health; a VIP that does not exist is named as such.
func TestResolveAgainstSecureMeshd(t *testing.T) {
	p := startMeshd(t, secureConfig)
	ops := p.issue(t, "--role", "operator", "--name", "alice")
	p.mustMeshctl(t, "--token-file", ops, "vip", "apply", "-f", writeFile(t, paymentsYAML))
	for _, in := range [][]string{
		{"--id", "p1", "--address", "10.0.0.1", "--port", "8080", "--secure-port", "8443", "--zone", "a"},
		{"--id", "p2", "--address", "10.0.0.2", "--port", "8080", "--secure-port", "8443", "--zone", "b", "--status", "DRAINING"},
		{"--id", "p3", "--address", "10.0.0.3", "--port", "8080", "--secure-port", "8443", "--zone", "b", "--status", "DOWN"},
	} {
		p.mustMeshctl(t, append([]string{"--token-file", ops, "instance", "register", "payments"}, in...)...)
	}
	orders := p.issue(t, "--service", "orders")

	out := p.mustMeshctl(t, "--token-file", orders, "resolve", "payments:8080")
	for _, want := range []string{
		"cluster payments.vip", "10.0.0.1  8080  HEALTHY", "10.0.0.2  8080  DRAINING",
		"route: request timeout 3s, 3 retries on connect-failure,unavailable", "registry: healthy",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.0.0.3") {
		t.Errorf("a DOWN instance is listed as an endpoint:\n%s", out)
	}

	out = p.mustMeshctl(t, "--token-file", orders, "-o", "json", "resolve", "payments.svip")
	var doc struct {
		Cluster struct {
			Name string `json:"name"`
		} `json:"cluster"`
		Endpoints struct {
			ClusterName string `json:"cluster_name"`
		} `json:"endpoints"`
		Route struct {
			Route struct {
				Timeout string `json:"timeout"`
			} `json:"route"`
		} `json:"route"`
		Secrets []string `json:"secrets"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("json output %v: %s", err, out)
	}
	if doc.Cluster.Name != "payments.svip" || doc.Endpoints.ClusterName != "payments.svip" || doc.Route.Route.Timeout != "3s" ||
		strings.Join(doc.Secrets, ",") != "xspace/identity,xspace/trust-bundle" {
		t.Errorf("json output: %+v\n%s", doc, out)
	}

	code, _, stderr := p.meshctl(t, "--token-file", orders, "resolve", "ghost")
	if code != exitFailure || !strings.Contains(stderr, `ghost.vip: no such VIP "ghost"`) {
		t.Errorf("ghost: exit %d, stderr %q", code, stderr)
	}
	// Without a token the stream is refused, and meshctl says so.
	code, _, stderr = p.meshctl(t, "resolve", "payments", "--xds", p.xds)
	if code != exitFailure || !strings.Contains(stderr, "Unauthenticated") {
		t.Errorf("no token: exit %d, stderr %q", code, stderr)
	}
}

// TestResolveDuringRegistryOutage: a name xDS answers as not found while
// the REST API says the registry is unavailable is reported as an outage,
// not as a VIP that does not exist; a bad name is a usage error.
func TestResolveDuringRegistryOutage(t *testing.T) {
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cp := cptest.Start(t, controlplane.Options{Source: store})
	rest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == api.InfoPath {
			api.WriteJSON(w, http.StatusOK, api.ServerInfo{XDSAddress: cp.Addr})
			return
		}
		api.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the registry is unavailable; try again shortly", "")
	}))
	t.Cleanup(rest.Close)

	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"--server", rest.URL, "resolve", "payments"}, nil, &out, &errOut)
	if code != exitFailure || !strings.Contains(errOut.String(), "payments.vip: not served now, and the registry is unreachable") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	code = run(t.Context(), []string{"--server", rest.URL, "resolve", "Not A Name"}, nil, &out, &errOut)
	if code != exitUsage {
		t.Fatalf("bad name: exit %d, stderr %q", code, errOut.String())
	}
}
