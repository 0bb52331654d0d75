package server_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/promtest"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// typeStatus returns what Proxies says of one type on node's stream.
func typeStatus(t *testing.T, m *mesh, node, typ string) server.TypeStatus {
	t.Helper()
	s, ok := findTypeStatus(m, node, typ)
	if !ok {
		t.Fatalf("no %s status for %s in %+v", typ, node, m.srv.Proxies())
	}
	return s
}

func findTypeStatus(m *mesh, node, typ string) (server.TypeStatus, bool) {
	for _, p := range m.srv.Proxies() {
		if p.NodeID != node {
			continue
		}
		for _, ts := range p.Types {
			if ts.Type == typ {
				return ts, true
			}
		}
	}
	return server.TypeStatus{}, false
}

// awaitTypeStatus waits until one type on node's stream satisfies ok: the
// ACK of the last response received is on its way when the test looks.
func awaitTypeStatus(t *testing.T, m *mesh, node, typ, what string, ok func(server.TypeStatus) bool) server.TypeStatus {
	t.Helper()
	var s server.TypeStatus
	await.True(t, what, func() bool {
		var found bool
		s, found = findTypeStatus(m, node, typ)
		return found && ok(s)
	})
	return s
}

// TestProxySyncStatusDelta: per type, the last response sent is pending
// until the proxy answers it, synced once it ACKs it, and NACKed with the
// proxy's error text when it rejects it; a NACK is counted in
// xspace_xds_nacks_total, which exists at zero before any.
func TestProxySyncStatusDelta(t *testing.T) {
	m := newMesh(t)
	if v := metricValue(t, m.reg, "xspace_xds_nacks_total", "type", "eds"); v != 0 {
		t.Fatalf("nacks before any: %v", v)
	}
	if _, found := promtest.Value(t, m.reg, "xspace_xds_nacks_total", "type", "eds"); !found {
		t.Fatal("xspace_xds_nacks_total{type=\"eds\"} does not exist before the first NACK")
	}
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	c := m.delta(t, "envoy-1")
	c.subscribe(cds, "payments.vip")
	r := <-c.resps // not ACKed yet
	if s := typeStatus(t, m, "envoy-1", "cds"); s.State != server.SyncPending || s.SentNonce != r.GetNonce() ||
		s.SentVersion != r.GetSystemVersionInfo() || s.AckedNonce != "" {
		t.Fatalf("before the ACK: %+v, want pending at nonce %s", s, r.GetNonce())
	}
	c.send(deltaReq{typeURL: cds, nonce: r.GetNonce()})
	c.barrier() // the barrier's own answer is ACKed by recv
	if s := awaitTypeStatus(t, m, "envoy-1", "cds", "cds synced", func(s server.TypeStatus) bool {
		return s.State == server.SyncSynced
	}); s.NACKs != 0 {
		t.Fatalf("after ACKs: %+v, want no NACK", s)
	}

	c.subscribe(eds, "payments.vip")
	r = <-c.resps
	c.send(deltaReq{typeURL: eds, nonce: r.GetNonce(), nack: "endpoint rejected: bad weight"})
	c.barrier() // the NACK was handled before the barrier's subscription
	s := typeStatus(t, m, "envoy-1", "eds")
	if s.State != server.SyncNACKed || s.NACKNonce != r.GetNonce() || s.NACKVersion != r.GetSystemVersionInfo() ||
		s.NACKError != "endpoint rejected: bad weight" || s.NACKs != 1 || s.NACKAt.IsZero() {
		t.Fatalf("after the NACK: %+v", s)
	}
	if v := metricValue(t, m.reg, "xspace_xds_nacks_total", "type", "eds"); v != 1 {
		t.Errorf("xspace_xds_nacks_total{type=eds} = %v, want 1", v)
	}
	// The next change of the VIP is sent and ACKed: synced again, the NACK kept.
	m.register(t, "payments", "p2", "10.0.0.2", registry.StatusUp)
	r = c.recv()
	s = awaitTypeStatus(t, m, "envoy-1", "eds", "the new endpoints acknowledged", func(s server.TypeStatus) bool {
		return s.AckedNonce == r.GetNonce()
	})
	if s.State != server.SyncSynced || s.NACKError == "" || s.NACKs != 1 {
		t.Fatalf("after a later ACK: %+v, want synced with the last NACK kept", s)
	}
}

// TestProxySyncStatusSotw: a state-of-the-world proxy's ACK says which
// version it applied; its NACK names the version it kept.
func TestProxySyncStatusSotw(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	m.register(t, "orders", "o1", "10.0.0.2", registry.StatusUp)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(m.conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *discoveryv3.DiscoveryRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *discoveryv3.DiscoveryResponse {
		t.Helper()
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	names := []string{"payments.vip"}
	send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "grpc-1", Cluster: "orders"}, TypeUrl: cds, ResourceNames: names})
	first := recv()
	send(&discoveryv3.DiscoveryRequest{TypeUrl: cds, ResourceNames: names, VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})
	// A request for another name: its answer proves the ACK was handled.
	names = append(names, "orders.vip")
	send(&discoveryv3.DiscoveryRequest{TypeUrl: cds, ResourceNames: names, VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})
	second := recv()
	if s := typeStatus(t, m, "grpc-1", "cds"); s.State != server.SyncPending || s.AckedVersion != first.GetVersionInfo() ||
		s.SentVersion != second.GetVersionInfo() {
		t.Fatalf("after the first ACK: %+v", s)
	}
	send(&discoveryv3.DiscoveryRequest{
		TypeUrl: cds, ResourceNames: names, VersionInfo: first.GetVersionInfo(), ResponseNonce: second.GetNonce(),
		ErrorDetail: &statuspb.Status{Message: "cluster rejected"},
	})
	s := awaitTypeStatus(t, m, "grpc-1", "cds", "the NACK recorded", func(s server.TypeStatus) bool { return s.NACKs > 0 })
	if s.State != server.SyncNACKed || s.NACKVersion != second.GetVersionInfo() || s.NACKError != "cluster rejected" || s.NACKs != 1 {
		t.Fatalf("after the NACK: %+v", s)
	}
}

// TestTypeIndexFollowsTypes: a stream's per-type entries (its sync states,
// the names it holds) are kept and listed in the order of Types, by their
// index; a new type must be given one.
func TestTypeIndexFollowsTypes(t *testing.T) {
	if len(server.Types) != server.ServedTypes {
		t.Fatalf("%d types served, per-type arrays of %d", len(server.Types), server.ServedTypes)
	}
	for i, typ := range server.Types {
		if got := server.TypeIndex(typ); got != i {
			t.Errorf("TypeIndex(%s) = %d, want %d", typ, got, i)
		}
	}
}
