package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// The scenarios of TestProxylessClients. Each fails if the client does
// not do what the VIP's policy says.

var grpcVIP = registry.Policy{Protocol: registry.GRPC}

// scenarioSpread: round robin over two instances reaches both.
func scenarioSpread(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "spread", 2)
	e.vip(t, "spread", grpcVIP, bs...)
	e.reachesAll(t, "xds:///spread.vip", callOpts{}, bs...)
}

// scenarioBareName: xds:///<vip> reaches the VIP's instances as
// xds:///<vip>.vip does.
func scenarioBareName(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "bare", 2)
	e.vip(t, "bare", grpcVIP, bs...)
	e.reachesAll(t, "xds:///bare", callOpts{}, bs...)
}

// scenarioInstanceLeaves: an instance marked DOWN, then one deregistered,
// stop receiving calls; the last one receives them all.
func scenarioInstanceLeaves(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "leave", 3)
	e.vip(t, "leave", grpcVIP, bs...)
	const target = "xds:///leave.vip"
	e.reachesAll(t, target, callOpts{}, bs...)
	ctx := context.Background()
	if _, err := e.m.store.SetStatus(ctx, "leave", bs[0].name, registry.StatusDown); err != nil {
		t.Fatal(err)
	}
	// With round robin over the two left, 10 calls in a row that avoid
	// the DOWN one mean it has left the client's picker.
	e.until(t, target, callOpts{}, 10*time.Second, streak(10, bs[1].name, bs[2].name))
	if err := e.m.store.Deregister(ctx, "leave", bs[1].name); err != nil {
		t.Fatal(err)
	}
	e.until(t, target, callOpts{}, 10*time.Second, streak(10, bs[2].name))
	if seen := e.spread(t, target, 20, callOpts{}); seen[bs[2].name] != 20 {
		t.Fatalf("after DOWN and deregistration, 20 calls went to %v; want %s only", seen, bs[2].name)
	}
}

// scenarioTimeout: the VIP's request timeout ends a call its instance
// never answers, long before the call's own deadline (gRPC reads it from
// max_stream_duration; before, calls ran until their deadline).
func scenarioTimeout(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "slow", 1)
	e.vip(t, "slow", registry.Policy{Protocol: registry.GRPC, Timeouts: registry.Timeouts{Request: registry.Duration(time.Second)}}, bs...)
	const target = "xds:///slow.vip"
	e.ok(t, target, callOpts{}) // the channel is ready, so only the call is timed
	r := e.client.call(t, target, callOpts{md: map[string]string{hangKey: "1"}, deadline: 30 * time.Second})
	// grpc-js may report the backend's answer to the cancellation
	// (CANCELLED) rather than its own DEADLINE_EXCEEDED: the time tells.
	if (r.code != codes.DeadlineExceeded && r.code != codes.Canceled) || r.took < 900*time.Millisecond || r.took > 15*time.Second {
		t.Fatalf("call to a hanging instance with a 1s VIP timeout and a 30s deadline: %s; want DEADLINE_EXCEEDED after about 1s", r)
	}
}

// scenarioRetries: a VIP retrying on unavailable 7 times gives gRPC
// clients 4 retries (5 attempts), the same in both; the default retry
// conditions (Envoy's) give them none.
func scenarioRetries(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "retry", 1)
	e.vip(t, "retry", registry.Policy{Protocol: registry.GRPC, Retries: registry.Retries{Attempts: 7, On: []string{"unavailable"}}}, bs...)
	fail := func(n int) callOpts { return callOpts{md: map[string]string{failAttemptsKey: fmt.Sprint(n)}} }
	if r := e.ok(t, "xds:///retry.vip", fail(4)); r.previous != 4 {
		t.Fatalf("call failing its first 4 attempts: %s; want success on the 5th", r)
	}
	if r := e.client.call(t, "xds:///retry.vip", fail(5)); r.code != codes.Unavailable {
		t.Fatalf("call failing its first 5 attempts: %s; want UNAVAILABLE after 5 attempts", r)
	}
	e.vip(t, "envoy-retry", registry.Policy{Protocol: registry.GRPC, Retries: registry.Retries{Attempts: 2}}, bs...)
	if r := e.client.call(t, "xds:///envoy-retry.vip", fail(1)); r.code != codes.Unavailable {
		t.Fatalf("call failing its first attempt, retries on connect-failure, refused-stream, reset only: %s; want UNAVAILABLE", r)
	}
}

// scenarioLoadBalancing: every load-balancing policy a VIP can have is
// accepted (no NACK: the table checks after each scenario) and balances:
// the spreading ones reach both instances, the hashing ones keep a key on
// one instance and spread keys over both.
func scenarioLoadBalancing(t *testing.T, e *proxylessEnv) {
	header := &registry.HashOn{Header: "x-user"}
	for _, tc := range []struct {
		lb     registry.LoadBalancing
		hashOn *registry.HashOn
	}{
		{registry.RoundRobin, nil},
		{registry.LeastRequest, nil},
		{registry.Random, nil},
		{registry.RingHash, header},
		{registry.Maglev, header},
		{registry.RingHash, &registry.HashOn{SourceIP: true}},
	} {
		name := "lb-" + string(tc.lb)
		if tc.hashOn != nil && tc.hashOn.SourceIP {
			name += "-channel"
		}
		name = slugVIP(name)
		t.Run(name, func(t *testing.T) {
			bs := backends(t, name, 2)
			e.vip(t, name, registry.Policy{Protocol: registry.GRPC, LoadBalancing: tc.lb, HashOn: tc.hashOn}, bs...)
			target := "xds:///" + name + ".vip"
			switch {
			case tc.hashOn == nil:
				e.reachesAll(t, target, callOpts{}, bs...)
			case tc.hashOn.SourceIP: // gRPC hashes its channel: one client, one instance
				if seen := e.spread(t, target, 20, callOpts{}); len(seen) != 1 {
					t.Fatalf("20 calls on one channel went to %v; want one instance", seen)
				}
			default:
				hashesByKey(t, e, target)
			}
		})
	}
}

// hashesByKey checks that calls with the same x-user header reach the same
// instance, and that 20 users reach both instances.
func hashesByKey(t *testing.T, e *proxylessEnv, target string) {
	t.Helper()
	users := map[string]bool{}
	for i := range 20 {
		o := callOpts{md: map[string]string{"x-user": fmt.Sprintf("user-%d", i)}}
		seen := e.spread(t, target, 5, o)
		if len(seen) != 1 {
			t.Fatalf("5 calls of user-%d went to %v; want one instance", i, seen)
		}
		for s := range seen {
			users[s] = true
		}
	}
	if len(users) != 2 {
		t.Fatalf("20 users reached %v; want both instances", users)
	}
}

// slugVIP makes a VIP name of a test name.
func slugVIP(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}

// scenarioOutlierDetection: with outlier detection on, an instance that
// fails every call is ejected (gRPC clients by failure percentage: they
// have no consecutive 5xx), then returns after base_ejection_time. The
// ejection happens in the clients' interval timer, the one that killed
// grpc-js processes when fields were missing; the client must survive it.
func scenarioOutlierDetection(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "eject", 2)
	good, bad := bs[0], bs[1]
	bad.failing.Store(true)
	e.vip(t, "eject", registry.Policy{Protocol: registry.GRPC, OutlierDetection: &registry.OutlierDetection{
		Interval:         registry.Duration(time.Second),
		BaseEjectionTime: registry.Duration(2 * time.Second),
	}}, bs...)
	const target = "xds:///eject.vip"
	seen := e.until(t, target, callOpts{}, 20*time.Second, streak(30, good.name))
	if !slices.ContainsFunc(seen, func(r callResult) bool { return r.code == codes.Unavailable }) {
		t.Fatalf("no call reached the failing instance before it was ejected: %v", seen)
	}
	// Ejected for base_ejection_time (2s), then back: its failures return.
	e.until(t, target, callOpts{}, 20*time.Second, func(r callResult) bool { return r.code == codes.Unavailable })

	// The zeros that turn ejection off are accepted too (the table checks
	// for NACKs) and leave calls flowing; their translation is golden.
	off := backends(t, "eject-off", 2)
	e.vip(t, "eject-off", registry.Policy{
		Protocol:         registry.GRPC,
		OutlierDetection: &registry.OutlierDetection{Interval: registry.Duration(time.Second)},
		Explicit:         []string{"outlier_detection.consecutive_5xx", "outlier_detection.max_ejection_percent"},
	}, off...)
	e.reachesAll(t, "xds:///eject-off.vip", callOpts{}, off...)
}

// scenarioUnknownTarget: a target meshd has no gRPC VIP for fails at once,
// even when the call waits for ready, instead of after 15 s (grpc-go) or at
// its deadline (grpc-js); the same channel works once the VIP exists.
func scenarioUnknownTarget(t *testing.T, e *proxylessEnv) {
	bs := backends(t, "later", 1)
	e.vip(t, "web", registry.Policy{Protocol: registry.HTTP1}, bs...)
	for _, target := range []string{"xds:///later.vip", "xds:///later", "xds:///web.vip"} {
		for _, failFast := range []bool{false, true} {
			r := e.client.call(t, target, callOpts{deadline: 30 * time.Second, failFast: failFast})
			if r.code != codes.Unavailable || r.took > 5*time.Second {
				t.Fatalf("call to %s (wait for ready %v), not a gRPC VIP: %s; want UNAVAILABLE at once", target, !failFast, r)
			}
		}
	}
	e.vip(t, "later", grpcVIP, bs...)
	for _, target := range []string{"xds:///later.vip", "xds:///later"} {
		e.until(t, target, callOpts{}, 10*time.Second, func(r callResult) bool { return r.code == codes.OK })
	}
}
