package server_test

// Tests that drive meshd with the Envoy client model (internal/envoymodel):
// a sidecar that behaves, rule by rule, as Envoy's source shows (issue 9).

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/prisma-systems/xspace-mesh/internal/envoymodel"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// newSidecar opens a modelled Envoy sidecar of service orders on conn.
func newSidecar(tb testing.TB, conn grpc.ClientConnInterface, id string, opts envoymodel.Options) *envoymodel.Sidecar {
	tb.Helper()
	if opts.Node == nil {
		opts.Node = &corev3.Node{Id: id, Cluster: "orders"}
	}
	s, err := envoymodel.New(conn, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func lookup(tb testing.TB, s *envoymodel.Sidecar, cluster string, want envoymodel.Result) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := s.Lookup(ctx, cluster)
	if err != nil || got != want {
		tb.Fatalf("lookup of %s: %v, %v; want %v (stream error: %v)", cluster, got, err, want, s.Err())
	}
}

// waitEndpoints waits until the sidecar holds endpoints of cluster at addr.
func waitEndpoints(tb testing.TB, s *envoymodel.Sidecar, cluster, addr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.WaitFor(ctx, func(v envoymodel.View) bool {
		for _, l := range v.Endpoints(cluster).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == addr {
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		tb.Fatalf("%s never reached the sidecar's endpoints of %s: %v", addr, cluster, err)
	}
}

// TestEnvoyModelUnknownNameThatAppears: a name meshd says does not exist
// is answered at once; Envoy does not ask again, so a second lookup waits
// its on-demand timeout; when the VIP is registered, meshd pushes it to
// the subscription Envoy still holds, and the next lookup needs no request.
func TestEnvoyModelUnknownNameThatAppears(t *testing.T) {
	m := newMesh(t)
	s := newSidecar(t, m.conn, "orders-1", envoymodel.Options{ODCDSTimeout: 500 * time.Millisecond})
	lookup(t, s, "late.vip", envoymodel.NotFound)
	lookup(t, s, "late.vip", envoymodel.TimedOut)
	if n := s.Stats().Subscribes[cds]; n != 1 {
		t.Fatalf("the sidecar subscribed %d cluster names for two lookups of one; want 1 (Envoy asks once)", n)
	}
	m.register(t, "late", "l1", "10.0.0.1", registry.StatusUp)
	waitEndpoints(t, s, "late.vip", "10.0.0.1")
	requests := s.Stats().Requests
	lookup(t, s, "late.vip", envoymodel.Found)
	if n := s.Stats().Requests; n != requests {
		t.Fatalf("a lookup of a pushed cluster sent %d requests; want none", n-requests)
	}
}

// TestEnvoyModelSecureFirstRequest: a .svip lookup warms the cluster
// through its endpoints and both secrets, each asked for only after what
// it follows, and is then found.
func TestEnvoyModelSecureFirstRequest(t *testing.T) {
	kr := testKeyring(t, time.Now())
	m := newSecureMesh(t, kr, time.Hour)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	tok, _ := kr.Issue("orders", time.Hour)
	s := newSidecar(t, m.conn, "orders-1", envoymodel.Options{Token: tok})
	lookup(t, s, "payments.svip", envoymodel.Found)
	st := s.Stats()
	want := map[string]int{cds: 1, eds: 1, resource.SecretType: 2}
	for typ, n := range want {
		if st.Subscribes[typ] != n || st.Received[typ] != n {
			t.Errorf("%s: subscribed %d, received %d; want %d each", typ, st.Subscribes[typ], st.Received[typ], n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, func(v envoymodel.View) bool {
		return v.Secret(names.IdentitySecret) && v.Secret(names.TrustBundleSecret)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestEnvoyModelClusterUpdateResendsEndpoints: an updated cluster keeps
// its endpoints name, which Envoy does not ask for again (issue #47302);
// it warms, holding back every other cluster request, until meshd sends
// the endpoints again, which it does with every cluster change.
func TestEnvoyModelClusterUpdateResendsEndpoints(t *testing.T) {
	m := newMesh(t)
	m.register(t, "payments", "p1", "10.0.0.1", registry.StatusUp)
	s := newSidecar(t, m.conn, "orders-1", envoymodel.Options{})
	lookup(t, s, "payments.vip", envoymodel.Found)
	received := s.Stats().Received[eds]
	var before *clusterv3.Cluster
	_ = s.WaitFor(t.Context(), func(v envoymodel.View) bool { before, _ = v.Cluster("payments.vip"); return true })
	if _, err := m.store.PutVIP(context.Background(), registry.VIP{Name: "payments", Policy: registry.Policy{Protocol: registry.HTTP2}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitFor(ctx, func(v envoymodel.View) bool {
		c, warming := v.Cluster("payments.vip")
		return !warming && !proto.Equal(c, before)
	}); err != nil {
		t.Fatalf("the updated cluster never finished warming: %v", err)
	}
	if n := s.Stats().Received[eds]; n <= received {
		t.Fatal("the cluster warmed without its endpoints being sent again")
	}
	// Nothing is held back any more: a new lookup goes out and is answered.
	lookup(t, s, "ghost.vip", envoymodel.NotFound)
}

// TestEnvoyModelLongLivedSidecar: a sidecar that touched 20,000 names over
// its life, 5,000 of them typos (Envoy never unsubscribes one), reconnects
// with all of them, keeps looking names up, new VIPs and new typos, stays
// connected, and receives an endpoint change within the usual time. meshd
// no longer tracks most of its unknown names (xds.max_unknown_names) but
// answers each.
func TestEnvoyModelLongLivedSidecar(t *testing.T) {
	const found, typos, later = 15_000, 5_000, 100
	m := newMesh(t)
	registerVIPs(t, m, found+later, 1)
	touched := make([]string, 0, found+typos)
	for i := range found {
		touched = append(touched, benchCluster(i))
		if i%(found/typos) == 0 { // a typo every third name
			touched = append(touched, fmt.Sprintf("typo-%05d.vip", i))
		}
	}
	s := newSidecar(t, m.conn, "orders-1", envoymodel.Options{Restore: touched})
	// A bound, not a target: under the race detector on two loaded cores
	// re-subscribing 20,000 names has taken over a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Every VIP it holds is served again. Of its unknown names, the newest
	// xds.max_unknown_names are answered as absent; meshd no longer tracks
	// the older ones (they were answered when first asked, and Envoy does
	// not ask again).
	if err := s.WaitFor(ctx, func(v envoymodel.View) bool {
		return v.Stats().Received[eds] == found && v.Stats().Removed[cds] == server.DefaultMaxUnknownNames
	}); err != nil {
		t.Fatalf("re-subscribing %d names: %v (stats %+v)", len(touched), err, s.Stats())
	}
	var more []string
	for i := range later {
		more = append(more, benchCluster(found+i), fmt.Sprintf("new-typo-%03d.vip", i))
	}
	lookupAll(t, s, more)
	if got := len(s.Subscribed()); got != found+typos+2*later {
		t.Fatalf("the sidecar asked for %d names; want %d", got, found+typos+2*later)
	}
	start := time.Now()
	m.register(t, benchVIP(7), "moved", "10.9.9.9", registry.StatusUp)
	waitEndpoints(t, s, benchCluster(7), "10.9.9.9")
	if err := s.Err(); err != nil {
		t.Fatalf("the stream ended: %v", err)
	}
	t.Logf("a sidecar holding %d names (%d unknown) received an endpoint change %s after the write",
		found+typos+2*later, typos+later, time.Since(start))
}

// benchCluster is the plaintext cluster of benchVIP(i).
func benchCluster(i int) string { return names.Cluster(benchVIP(i), false) }

// lookupAll looks names up, 256 at a time as concurrent requests would,
// and fails on a lookup that neither found its cluster nor was told it
// does not exist.
func lookupAll(tb testing.TB, s *envoymodel.Sidecar, names []string) {
	tb.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	errs := make(chan error, len(names))
	for _, name := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r, err := s.Lookup(context.Background(), name)
			if err == nil && r == envoymodel.TimedOut {
				err = fmt.Errorf("lookup of %s timed out", name)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("%v (and %d more); stream error: %v", err, len(errs), s.Err())
	}
}

// TestEnvoyModelFleetReconnectsAfterRestart: 1,000 sidecars, each holding
// clusters and a few unknown names, reconnect to a restarted meshd (nothing
// resolved yet, same registry) with every name they hold: nothing they hold
// is sent again or removed, only their unknown names are answered again,
// and they keep receiving changes.
func TestEnvoyModelFleetReconnectsAfterRestart(t *testing.T) {
	const sidecars, held, unknown = 1000, 8, 2
	m := newMesh(t)
	registerVIPs(t, m, 100, 1)
	fleet := make([]*envoymodel.Sidecar, sidecars)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32) // the fleet came up over time, not at once
	for i := range fleet {
		// Lookups are not what this test times: a slow machine (the race
		// detector) must not turn them into Envoy's timeouts.
		fleet[i] = newSidecar(t, m.conn, fmt.Sprintf("orders-%d", i), envoymodel.Options{ODCDSTimeout: time.Minute})
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var names []string
			for k := range held {
				names = append(names, benchCluster((i+k*11)%100))
			}
			for k := range unknown {
				names = append(names, fmt.Sprintf("typo-%d-%d.vip", i, k))
			}
			lookupAll(t, fleet[i], names)
		})
	}
	wg.Wait()

	m.restart(t)
	for _, s := range fleet {
		if err := s.Reconnect(m.conn); err != nil {
			t.Fatal(err)
		}
	}
	// Every sidecar is answered: its unknown names are removed again.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, s := range fleet {
		if err := s.WaitFor(ctx, func(v envoymodel.View) bool { return v.Stats().RemovedSinceOpen >= unknown }); err != nil {
			t.Fatalf("sidecar %d after the restart: %v", i, err)
		}
	}
	for i, s := range fleet {
		if st := s.Stats(); st.ReceivedSinceOpen != 0 || st.RemovedSinceOpen != unknown {
			t.Fatalf("sidecar %d after the restart was sent %d resources and %d removals; want none and its %d unknown names",
				i, st.ReceivedSinceOpen, st.RemovedSinceOpen, unknown)
		}
	}
	m.register(t, benchVIP(0), "after-restart", "10.8.8.8", registry.StatusUp)
	waitEndpoints(t, fleet[0], benchCluster(0), "10.8.8.8")
	if got := slices.Clone(fleet[0].Subscribed()); len(got) != held+unknown {
		t.Fatalf("sidecar 0 holds %d names after the restart; want %d", len(got), held+unknown)
	}
}
