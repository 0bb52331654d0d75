package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// proxylessScenarios is the table both proxyless gRPC clients run, each
// against a real meshd of its own and real backends on loopback. Each
// scenario uses VIPs of its own.
var proxylessScenarios = []struct {
	name string
	run  func(t *testing.T, e *proxylessEnv)
}{
	{"calls spread over instances", scenarioSpread},
	{"bare VIP name as target", scenarioBareName},
	{"instance marked DOWN or deregistered leaves", scenarioInstanceLeaves},
	{"request timeout", scenarioTimeout},
	{"retries", scenarioRetries},
	{"load balancing", scenarioLoadBalancing},
	{"outlier detection ejects a failing instance", scenarioOutlierDetection},
	{"unknown target fails at once, then recovers", scenarioUnknownTarget},
}

// TestProxylessClients runs every proxyless scenario with grpc-go's xDS
// resolver and with Node's @grpc/grpc-js-xds, each started from the
// bootstrap meshctl bootstrap --grpc writes, unmodified. meshd must count
// no NACK in the whole run, and the grpc-js process must never die. The
// Node half skips, in one line, where node or the modules are missing.
func TestProxylessClients(t *testing.T) {
	for _, kind := range []string{"grpc-go", "grpc-js"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			modules := ""
			if kind == "grpc-js" {
				modules = nodeModules(t) // or skip
			}
			m := newMesh(t)
			cfg, err := bootstrap.GRPC(bootstrap.GRPCOptions{XDS: m.addr, Service: "orders"})
			if err != nil {
				t.Fatal(err)
			}
			var client proxylessClient
			if kind == "grpc-go" {
				client = newGoClient(t, cfg)
			} else {
				file := filepath.Join(t.TempDir(), "xds-bootstrap.json")
				if err := os.WriteFile(file, cfg, 0o600); err != nil {
					t.Fatal(err)
				}
				client = startNode(t, modules, file)
			}
			e := &proxylessEnv{m: m, client: client}
			for _, sc := range proxylessScenarios {
				t.Run(sc.name, func(t *testing.T) {
					sc.run(t, e)
					client.alive(t)
					e.noNACKs(t)
				})
			}
		})
	}
}

// proxylessEnv is what a scenario works with.
type proxylessEnv struct {
	m      *mesh
	client proxylessClient
}

// vip applies a VIP and registers backends as its UP instances.
func (e *proxylessEnv) vip(t *testing.T, name string, p registry.Policy, backends ...*backend) {
	t.Helper()
	if _, err := e.m.store.PutVIP(context.Background(), registry.VIP{Name: name, Policy: p}); err != nil {
		t.Fatal(err)
	}
	for _, b := range backends {
		_, err := e.m.store.Register(context.Background(), registry.Instance{
			VIP: name, ID: b.name, Address: "127.0.0.1", Port: b.port, Status: registry.StatusUp,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// backends starts n backends named <vip>-a, <vip>-b, ...
func backends(t *testing.T, vip string, n int) []*backend {
	out := make([]*backend, n)
	for i := range out {
		out[i] = startBackend(t, fmt.Sprintf("%s-%c", vip, 'a'+i))
	}
	return out
}

// ok makes a call that must succeed, and returns who answered.
func (e *proxylessEnv) ok(t *testing.T, target string, o callOpts) callResult {
	t.Helper()
	r := e.client.call(t, target, o)
	if r.code != codes.OK {
		t.Fatalf("call to %s: %s\nxDS server log:\n%s", target, r, e.m.logs.String())
	}
	return r
}

// spread makes n successful calls and counts them per backend.
func (e *proxylessEnv) spread(t *testing.T, target string, n int, o callOpts) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		seen[e.ok(t, target, o).server]++
	}
	return seen
}

// reachesAll makes calls, each of which must succeed, until every one of
// bs has answered one, for at most 10 s: a client sends its first calls to
// the instances it has connected to, while it connects to the others.
func (e *proxylessEnv) reachesAll(t *testing.T, target string, o callOpts, bs ...*backend) {
	t.Helper()
	want := map[string]bool{}
	for _, b := range bs {
		want[b.name] = true
	}
	seen := map[string]int{}
	for start := time.Now(); len(seen) < len(want); {
		r := e.ok(t, target, o)
		if !want[r.server] {
			t.Fatalf("call to %s answered by %s; want one of %v", target, r.server, want)
		}
		seen[r.server]++
		if time.Since(start) > 10*time.Second {
			t.Fatalf("calls to %s reached %v in 10s; want each of %v", target, seen, want)
		}
	}
}

// until makes calls until done accepts a result, for at most limit, and
// returns the results it saw. Each call is an event; nothing sleeps.
func (e *proxylessEnv) until(t *testing.T, target string, o callOpts, limit time.Duration, done func(callResult) bool) []callResult {
	t.Helper()
	var seen []callResult
	for start := time.Now(); time.Since(start) < limit; {
		r := e.client.call(t, target, o)
		seen = append(seen, r)
		if done(r) {
			return seen
		}
	}
	last := seen[max(0, len(seen)-5):]
	t.Fatalf("%s: condition not met after %d calls in %s; last: %v", target, len(seen), limit, last)
	return nil
}

// streak returns a condition met once n calls in a row succeed from one of
// servers.
func streak(n int, servers ...string) func(callResult) bool {
	run := 0
	return func(r callResult) bool {
		hit := false
		for _, s := range servers {
			hit = hit || (r.code == codes.OK && r.server == s)
		}
		if !hit {
			run = 0
			return false
		}
		run++
		return run >= n
	}
}

// noNACKs fails if meshd counted a NACK of any type.
func (e *proxylessEnv) noNACKs(t *testing.T) {
	t.Helper()
	for _, typ := range server.Types {
		if n := metricValue(t, e.m.reg, "xspace_xds_nacks_total", "type", server.TypeLabel(typ)); n != 0 {
			t.Fatalf("meshd counted %v NACKs of %s\nxDS server log:\n%s", n, server.TypeLabel(typ), e.m.logs.String())
		}
	}
}
