package consul

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	capi "github.com/hashicorp/consul/api"
)

// holder is a delta ADS client that behaves like an Envoy sidecar holding
// clusters: it ACKs everything, keeps what it was sent, and counts every
// loss of something it held (a cluster removed, an endpoint gone, an
// assignment that became empty), so a test can assert that an outage cost
// nothing.
type holder struct {
	tb     testing.TB
	sendMu sync.Mutex
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient

	mu        sync.Mutex
	changed   *sync.Cond
	clusters  map[string]bool
	endpoints map[string][]string // cluster -> addresses, sorted
	losses    losses
	closed    bool
}

// losses are what a holder lost after it first held the thing.
type losses struct {
	clustersRemoved  int
	endpointsRemoved int
	emptyAssignments int
	log              []string
}

// minus returns what was lost since o.
func (l losses) minus(o losses) losses {
	return losses{
		clustersRemoved:  l.clustersRemoved - o.clustersRemoved,
		endpointsRemoved: l.endpointsRemoved - o.endpointsRemoved,
		emptyAssignments: l.emptyAssignments - o.emptyAssignments,
	}
}

// plus adds o to l.
func (l losses) plus(o losses) losses {
	return losses{
		clustersRemoved:  l.clustersRemoved + o.clustersRemoved,
		endpointsRemoved: l.endpointsRemoved + o.endpointsRemoved,
		emptyAssignments: l.emptyAssignments + o.emptyAssignments,
	}
}

func (m *mesh) holder(tb testing.TB, nodeID string) *holder {
	tb.Helper()
	h := &holder{tb: tb, stream: m.stream(tb), clusters: map[string]bool{}, endpoints: map[string][]string{}}
	h.changed = sync.NewCond(&h.mu)
	h.send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: nodeID, Cluster: "orders"}, TypeUrl: cds})
	go h.receive()
	return h
}

func (h *holder) send(req *discoveryv3.DeltaDiscoveryRequest) {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	// io.EOF means the server ended the stream (the control plane stops
	// when the test ends); receive sees how, from Recv.
	if err := h.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		h.tb.Errorf("holder send: %v", err)
	}
}

func (h *holder) receive() {
	for {
		r, err := h.stream.Recv()
		if err != nil {
			h.mu.Lock()
			h.closed = true
			h.changed.Broadcast()
			h.mu.Unlock()
			return
		}
		h.apply(r)
		h.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
}

// apply records one response, counting losses.
func (h *holder) apply(r *discoveryv3.DeltaDiscoveryResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.changed.Broadcast()
	for _, name := range r.GetRemovedResources() {
		if r.GetTypeUrl() == cds && h.clusters[name] {
			h.losses.clustersRemoved++
			h.losses.log = append(h.losses.log, "cluster "+name+" removed")
		}
		if r.GetTypeUrl() == eds && len(h.endpoints[name]) > 0 {
			h.losses.endpointsRemoved += len(h.endpoints[name])
			h.losses.log = append(h.losses.log, "assignment "+name+" removed")
		}
		if r.GetTypeUrl() == cds {
			h.clusters[name] = false
		} else {
			delete(h.endpoints, name)
		}
	}
	for _, res := range r.GetResources() {
		if r.GetTypeUrl() == cds {
			h.clusters[res.GetName()] = true
			continue
		}
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := res.GetResource().UnmarshalTo(cla); err != nil {
			h.tb.Errorf("decode %s: %v", res.GetName(), err)
			continue
		}
		now, before := addresses(cla), h.endpoints[res.GetName()]
		for _, a := range before {
			if !slices.Contains(now, a) {
				h.losses.endpointsRemoved++
				h.losses.log = append(h.losses.log, fmt.Sprintf("endpoint %s of %s removed", a, res.GetName()))
			}
		}
		if len(before) > 0 && len(now) == 0 {
			h.losses.emptyAssignments++
		}
		h.endpoints[res.GetName()] = now
	}
}

// hold subscribes to clusters and their endpoints, and waits until it holds
// all of them.
func (h *holder) hold(clusters ...string) {
	h.tb.Helper()
	h.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: cds, ResourceNamesSubscribe: clusters})
	h.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: eds, ResourceNamesSubscribe: clusters})
	h.await(10*time.Second, "the clusters and their endpoints", func() bool {
		for _, c := range clusters {
			if !h.clusters[c] || len(h.endpoints[c]) == 0 {
				return false
			}
		}
		return true
	})
}

// await waits until cond, evaluated with the holder's state locked, holds.
func (h *holder) await(timeout time.Duration, what string, cond func() bool) {
	h.tb.Helper()
	timer := time.AfterFunc(timeout, func() {
		h.mu.Lock()
		h.closed = true // wakes the wait below; the stream is judged dead for this test
		h.changed.Broadcast()
		h.mu.Unlock()
	})
	defer timer.Stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	for !cond() {
		if h.closed {
			h.tb.Fatalf("holder: no %s within %s; holds %v", what, timeout, h.endpoints)
		}
		h.changed.Wait()
	}
}

// has reports (under the holder's lock, inside await) whether cluster's
// endpoints include addr.
func (h *holder) has(cluster, addr string) bool { return slices.Contains(h.endpoints[cluster], addr) }

// lost returns what the holder lost so far.
func (h *holder) lost() losses {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.losses
	l.log = slices.Clone(l.log)
	return l
}

// mark registers a native instance at 10.1.<i>.<n> in each VIP (i its
// index) and waits until the holder has them all: every watch has followed
// Consul up to now, and everything before reached the holder.
func mark(t *testing.T, m *mesh, h *holder, vips []string, n int) {
	t.Helper()
	addr := func(i int) string { return fmt.Sprintf("10.1.%d.%d", i, n) }
	for i, vip := range vips {
		m.native(&capi.AgentServiceRegistration{ID: fmt.Sprintf("%s-m%d", vip, n), Name: vip, Address: addr(i), Port: 8080}, "")
	}
	h.await(30*time.Second, "the markers", func() bool {
		for i, vip := range vips {
			if !h.has(vip+".vip", addr(i)) {
				return false
			}
		}
		return true
	})
}
