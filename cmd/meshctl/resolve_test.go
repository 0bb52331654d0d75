package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prisma-systems/xspace-mesh/controlplane"
	"github.com/prisma-systems/xspace-mesh/controlplane/cptest"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
)

// xdsServer runs the real control-plane stack on loopback and returns its
// xDS address and registry.
func xdsServer(t *testing.T) (string, *embedded.Store) {
	t.Helper()
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cp := cptest.Start(t, controlplane.Options{Source: store})
	return cp.Addr, store
}

func TestResolve(t *testing.T) {
	addr, store := xdsServer(t)
	for _, in := range []registry.Instance{
		{VIP: "payments", ID: "p1", Address: "10.0.0.1", Port: 8080, Zone: "a"},
		{VIP: "payments", ID: "p2", Address: "10.0.0.2", Port: 8080, Zone: "b", Status: registry.StatusDraining},
		{VIP: "payments", ID: "p3", Address: "10.0.0.3", Port: 8080, Zone: "b", Status: registry.StatusDown},
	} {
		if _, err := store.Register(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"resolve", "payments:8080", "--xds", addr}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"cluster payments.vip", "10.0.0.1  8080  HEALTHY", "10.0.0.2  8080  DRAINING"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "10.0.0.3") {
		t.Errorf("a DOWN instance is listed as an endpoint:\n%s", out.String())
	}

	out.Reset()
	if code := run(t.Context(), []string{"-o", "json", "resolve", "payments", "--xds", addr}, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Cluster struct {
			Name string `json:"name"`
		} `json:"cluster"`
		Endpoints struct {
			ClusterName string `json:"cluster_name"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Cluster.Name != "payments.vip" || doc.Endpoints.ClusterName != "payments.vip" {
		t.Fatalf("json output %v: %s", err, out.String())
	}
}

func TestResolveNotServed(t *testing.T) {
	addr, _ := xdsServer(t)
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"resolve", "ghost", "--xds", addr}, nil, &out, &errOut)
	if code != exitFailure || !strings.Contains(errOut.String(), "ghost.vip: the control plane does not serve this cluster") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	code = run(t.Context(), []string{"resolve", "Not A Name", "--xds", addr}, nil, &out, &errOut)
	if code != exitUsage {
		t.Fatalf("bad name: exit %d, stderr %q", code, errOut.String())
	}
}
