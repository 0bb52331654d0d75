//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/bootstrap"
	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/token"
)

// cluster is a running mesh: meshd, two api instances and a worker, each
// behind an Envoy sidecar, whichever way it was started.
type cluster struct {
	meshd  string // meshd's REST base URL (https)
	caFile string // the CA that signs meshd's serving certificate
	// operator is an operator token of meshd's keyring, for the REST API.
	operator string
	worker   string            // the demo worker's base URL
	apis     map[string]string // api instance name -> its base URL (admin endpoints)
	// instances are the api instances' names, sorted.
	instances []string
	// restartMeshd stops meshd and starts it again, returning once it is ready.
	restartMeshd func(t *testing.T)
}

// start brings a cluster up: processes when ENVOY_BIN is set, docker
// compose when docker works, and otherwise skips in one line.
func start(t *testing.T) *cluster {
	if bin := os.Getenv("ENVOY_BIN"); bin != "" {
		return startProcesses(t, bin)
	}
	err := dockerUsable()
	if err == nil {
		return startCompose(t)
	}
	t.Skipf("e2e skipped: ENVOY_BIN is not set and docker is not usable (%v); run `make e2e` where Docker runs, or set ENVOY_BIN to an Envoy >= "+bootstrap.MinEnvoyVersion+" binary", err)
	return nil
}

func dockerUsable() error {
	for _, args := range [][]string{{"info", "--format", "{{.ServerVersion}}"}, {"compose", "version"}} {
		var stderr strings.Builder
		cmd := exec.Command("docker", args...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("docker %s: %w: %s", args[0], err, firstLine([]byte(stderr.String())))
		}
	}
	return nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// hello is what a demo api instance answers.
type hello struct {
	Instance string `json:"instance"`
	VIP      string `json:"vip"`
	Caller   string `json:"caller"`
	Host     string `json:"host"`
}

// result is one request the worker sent through its sidecar.
type result struct {
	Status    int     `json:"status"`
	Body      string  `json:"body"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error"`
}

// hello decodes a successful answer of an api instance.
func (r result) hello(t *testing.T) hello {
	t.Helper()
	var h hello
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &h) != nil {
		t.Fatalf("status %d body %q error %q; want 200 from an api instance", r.Status, r.Body, r.Error)
	}
	return h
}

// call asks the worker to send GET path with the given authority through
// its sidecar, as the worker's own code would.
func (c *cluster) call(t *testing.T, authority, path string) result {
	t.Helper()
	q := url.Values{"authority": {authority}, "path": {path}}
	resp, err := http.Get(c.worker + "/call?" + q.Encode())
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var r result
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("worker answered %s: %v", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK && r.Error == "" {
		t.Fatalf("worker answered %s", resp.Status)
	}
	return r
}

// spread makes n calls and counts the answering instances; any failure fails.
func (c *cluster) spread(t *testing.T, authority string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		seen[c.call(t, authority, "/hello").hello(t).Instance]++
	}
	return seen
}

// settle calls until n calls in a row satisfy ok, or fails after timeout.
func (c *cluster) settle(t *testing.T, what, authority string, n int, timeout time.Duration, ok func(result) bool) {
	t.Helper()
	await.Within(t, timeout, what, func() error {
		for streak := 0; streak < n; streak++ {
			if r := c.call(t, authority, "/hello"); !ok(r) {
				return fmt.Errorf("after %d calls in a row: %d %s%s", streak, r.Status, r.Error, r.Body)
			}
		}
		return nil
	})
}

func (c *cluster) admin(t *testing.T, instance, path string) {
	t.Helper()
	resp, err := http.Post(c.apis[instance]+path, "", nil)
	if err != nil {
		t.Fatalf("%s %s: %v", instance, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %s %s", instance, path, resp.Status, b)
	}
}

// meshdHTTP is an HTTP client of meshd's REST API: it trusts c.caFile,
// read now (meshd may have just created it), and presents the operator
// token.
func (c *cluster) meshdHTTP() (*http.Client, error) {
	return api.HTTPClient(api.ClientOptions{CAFile: c.caFile, Token: c.operator})
}

// client is a REST client of meshd as an operator.
func (c *cluster) client(t *testing.T) *api.Client {
	t.Helper()
	hc, err := c.meshdHTTP()
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(c.meshd, hc)
}

// meshdReady is a readiness check: meshd's /readyz answers 200 over TLS.
func (c *cluster) meshdReady(ctx context.Context) error {
	hc, err := c.meshdHTTP()
	if err != nil {
		return err
	}
	return getOK(ctx, hc, c.meshd+"/readyz")
}

// operatorToken issues an operator token from the keyring file at path.
func operatorToken(t *testing.T, path string) string {
	t.Helper()
	kr, err := token.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := kr.IssueRole(token.RoleOperator, "e2e", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitUp waits until meshd lists n UP instances of a VIP.
func (c *cluster) waitUp(t *testing.T, vip string, n int) {
	t.Helper()
	client := c.client(t)
	await.Within(t, time.Minute, fmt.Sprintf("meshd to list %d UP instances of %s", n, vip), func() error {
		insts, err := client.Instances(context.Background(), vip)
		if err != nil {
			return err
		}
		up := 0
		for _, in := range insts {
			if in.Status == registry.StatusUp {
				up++
			}
		}
		if up != n {
			return fmt.Errorf("%d UP", up)
		}
		return nil
	})
}

// TestE2E drives real Envoy sidecars configured by meshd. The subtests
// run in order, each leaving the mesh as the next expects.
func TestE2E(t *testing.T) {
	c := start(t)
	c.waitUp(t, "api", 2)
	c.instances = slices.Sorted(maps.Keys(c.apis))
	t.Run("first request resolves on demand", c.testFirstRequest)
	t.Run("calls spread over both instances", c.testSpread)
	t.Run("svip is mutually authenticated", c.testMutualTLS)
	t.Run("a caller the policy does not allow gets 403", c.testAllowedCallers)
	t.Run("unknown VIP answers 503 fast", c.testUnknownVIP)
	t.Run("an unknown VIP asked again waits for the on-demand timeout", c.testUnknownAgain)
	t.Run("an unknown VIP that appears is served without asking", c.testAppears)
	t.Run("a failing instance is retried around", c.testRetry)
	t.Run("a removed instance stops receiving traffic", c.testRemoved)
	t.Run("restarting meshd does not interrupt traffic", c.testRestart)
}

func (c *cluster) testFirstRequest(t *testing.T) {
	first := c.call(t, "api", "/hello")
	h := first.hello(t)
	if !slices.Contains(c.instances, h.Instance) || h.VIP != "api" {
		t.Fatalf("answered by %+v; want one of %v", h, c.instances)
	}
	next := c.call(t, "api", "/hello")
	next.hello(t)
	t.Logf("first request to api.vip, with on-demand CDS and EDS: %.2f ms; the next: %.2f ms", first.LatencyMS, next.LatencyMS)
}

func (c *cluster) testSpread(t *testing.T) {
	// The authority may name the cluster and a port.
	seen := c.spread(t, "api.vip:8080", 30)
	for _, name := range c.instances {
		if seen[name] == 0 {
			t.Fatalf("30 calls reached %v; want every instance of %v", seen, c.instances)
		}
	}
}

func (c *cluster) testMutualTLS(t *testing.T) {
	h := c.call(t, "api.svip", "/hello").hello(t)
	if h.Caller != "spiffe://xspace/svc/worker" {
		t.Fatalf("the api saw caller %q; want the worker's SAN spiffe://xspace/svc/worker", h.Caller)
	}
}

// testAllowedCallers: api's policy names the services that may call it
// over mutual TLS; its sidecars answer any other caller 403 (Envoy's RBAC
// filter: "RBAC: access denied"), before the request reaches api. The
// plaintext api.vip carries no caller identity, and is not checked.
func (c *cluster) testAllowedCallers(t *testing.T) {
	client := c.client(t)
	allow := func(callers ...string) {
		t.Helper()
		if _, _, err := client.PutVIP(context.Background(), registry.VIP{Name: "api", Policy: registry.Policy{AllowedCallers: &callers}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if _, _, err := client.PutVIP(context.Background(), registry.VIP{Name: "api"}); err != nil {
			t.Error(err)
		}
	})
	allow("billing")
	c.settle(t, "worker denied on api.svip", "api.svip", 10, 20*time.Second, func(r result) bool {
		return r.Status == http.StatusForbidden && strings.Contains(r.Body, "RBAC: access denied")
	})
	c.call(t, "api.vip", "/hello").hello(t)
	allow("billing", "worker")
	c.settle(t, "worker allowed on api.svip", "api.svip", 10, 20*time.Second, func(r result) bool {
		return r.Status == http.StatusOK && strings.Contains(r.Body, `"caller":"spiffe://xspace/svc/worker"`)
	})
}

// testUnknownVIP checks that an unknown VIP is answered by meshd's "not
// found", not by Envoy's on-demand timeout (5s).
func (c *cluster) testUnknownVIP(t *testing.T) {
	c.expectUnknown(t, "nosuch")
}

// testUnknownAgain: Envoy does not ask again for a name it was told does
// not exist (od_cds_api_impl.cc, v1.36.0 to v1.39.0: "already subscribed
// to, skipping"), so a second request for it waits the on-demand timeout
// (xds.odcds_timeout, 5s) for its 503.
func (c *cluster) testUnknownAgain(t *testing.T) {
	r := c.call(t, "nosuch", "/hello")
	if r.Status != http.StatusServiceUnavailable || r.LatencyMS < 4000 {
		t.Fatalf("nosuch asked again: status %d after %.0f ms; want 503 after the 5s on-demand timeout", r.Status, r.LatencyMS)
	}
	t.Logf("nosuch asked again: 503 after %.0f ms (Envoy waits for meshd to push it)", r.LatencyMS)
}

// testAppears: once a name the sidecar was told does not exist is
// registered, meshd pushes its cluster to the sidecar, which still holds
// the subscription: the next request is served without a lookup.
func (c *cluster) testAppears(t *testing.T) {
	_, _, err := c.client(t).PutVIP(context.Background(), registry.VIP{Name: "nosuch"})
	if err != nil {
		t.Fatal(err)
	}
	// The VIP has no instance: the sidecar now knows the cluster, and
	// answers no_healthy_upstream at once instead of cluster_not_found.
	c.settle(t, "nosuch pushed", "nosuch", 1, 20*time.Second, func(r result) bool {
		return r.Status == http.StatusServiceUnavailable && strings.Contains(r.Body, "no_healthy_upstream") && r.LatencyMS < 1000
	})
}

func (c *cluster) expectUnknown(t *testing.T, vip string) {
	t.Helper()
	r := c.call(t, vip, "/hello")
	// The body is the sidecar's own, rewritten to say what happened
	// (translate.OutboundListener's local reply).
	if r.Status != http.StatusServiceUnavailable || !strings.HasPrefix(r.Body, "xspace: no route to "+vip) {
		t.Fatalf("unknown VIP %s: status %d body %q; want 503 with the sidecar's explanation", vip, r.Status, r.Body)
	}
	if r.LatencyMS > 2500 {
		t.Fatalf("unknown VIP %s answered after %.0f ms: that is Envoy's on-demand timeout, not meshd's not-found answer", vip, r.LatencyMS)
	}
	t.Logf("unknown VIP %s: 503 in %.2f ms: %s", vip, r.LatencyMS, firstLine([]byte(r.Body)))
}

func (c *cluster) testRetry(t *testing.T) {
	// The VIP's own retry policy (retry on 5xx) reaches every sidecar as a
	// route of its own.
	_, _, err := c.client(t).PutVIP(context.Background(), registry.VIP{Name: "api", Policy: registry.Policy{
		Retries: registry.Retries{Attempts: 3, On: []string{"5xx", "connect-failure", "refused-stream", "reset"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	failing, healthy := c.instances[0], c.instances[1]
	c.admin(t, failing, "/admin/fail?on=true")
	t.Cleanup(func() { c.admin(t, failing, "/admin/fail?on=false") })
	c.settle(t, "retries around "+failing, "api", 20, 20*time.Second, func(r result) bool { return r.Status == http.StatusOK })
	if seen := c.spread(t, "api", 20); seen[healthy] != 20 {
		t.Fatalf("with %s failing, 20 calls were answered by %v; want %s only", failing, seen, healthy)
	}
}

func (c *cluster) testRemoved(t *testing.T) {
	gone, kept := c.instances[1], c.instances[0]
	c.admin(t, gone, "/admin/leave")
	c.settle(t, gone+" removed", "api", 20, 20*time.Second, func(r result) bool {
		return r.Status == http.StatusOK && strings.Contains(r.Body, `"instance":"`+kept+`"`)
	})
	if seen := c.spread(t, "api", 20); seen[kept] != 20 {
		t.Fatalf("after %s left, 20 calls were answered by %v; want %s only", gone, seen, kept)
	}
}

func (c *cluster) testRestart(t *testing.T) {
	var (
		mu       sync.Mutex
		calls    int
		failures []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			err := callOnce(c, "api", "/hello")
			mu.Lock()
			calls++
			if err != nil {
				failures = append(failures, err.Error())
			}
			mu.Unlock()
		}
	}()
	made := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	await.True(t, "20 calls before the restart", func() bool { return made() >= 20 })
	restarted := time.Now()
	c.restartMeshd(t)
	// Every sidecar (the worker's and each API instance's) reconnects to
	// the new meshd, and 20 more calls are made after that.
	client := c.client(t)
	await.Within(t, time.Minute, "every sidecar to reconnect to the restarted meshd", func() error {
		proxies, err := client.Proxies(context.Background())
		if err != nil {
			return err
		}
		back := 0
		for _, p := range proxies {
			if p.ConnectedSince.After(restarted) {
				back++
			}
		}
		if back < len(c.apis)+1 {
			return fmt.Errorf("%d of %d sidecars connected since the restart", back, len(c.apis)+1)
		}
		return nil
	})
	after := made()
	await.True(t, "20 calls after the sidecars reconnected", func() bool { return made() >= after+20 })
	close(stop)
	wg.Wait()
	if len(failures) > 0 || calls < 20 {
		t.Fatalf("%d of %d calls failed across a meshd restart: %v", len(failures), calls, failures)
	}
	t.Logf("%d calls, none failed, across a meshd restart", calls)
	// The sidecars reconnected to the new meshd: a name none of them asked
	// for before is answered by it, and mutual TLS still works.
	c.expectUnknown(t, "never-asked")
	if h := c.call(t, "api.svip", "/hello").hello(t); h.Caller != "spiffe://xspace/svc/worker" {
		t.Fatalf("after the restart the api saw caller %q", h.Caller)
	}
}

// callOnce is call for a background goroutine: it returns what went wrong.
func callOnce(c *cluster, authority, path string) error {
	q := url.Values{"authority": {authority}, "path": {path}}
	resp, err := http.Get(c.worker + "/call?" + q.Encode())
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var r result
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("worker answered %s: %w", resp.Status, err)
	}
	if r.Status != http.StatusOK {
		return errors.New(firstLine([]byte(fmt.Sprintf("status %d %s%s", r.Status, r.Error, r.Body))))
	}
	return nil
}
