package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prisma-systems/xspace-mesh/xds/probe"
)

// binaries builds meshd and meshctl once for the tests of this package.
func binaries(t *testing.T) (meshd, meshctl string) {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"meshd", "meshctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	return filepath.Join(dir, "meshd"), filepath.Join(dir, "meshctl")
}

// process is a running meshd with the addresses it reported.
type process struct {
	cmd       *exec.Cmd
	xds, http string
	exited    chan struct{} // closed when the process has exited
	err       error         // its exit status, once exited is closed

	mu  sync.Mutex
	log strings.Builder // everything meshd logged
}

// logged returns what meshd has logged so far.
func (p *process) logged() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startMeshd starts meshd on dataDir and free ports, with more flags if
// given, and waits until it reports where it serves.
func startMeshd(t *testing.T, bin, dataDir string, flags ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, append([]string{
		"--data-dir", dataDir, "--xds-address", "127.0.0.1:0",
		"--http-address", "127.0.0.1:0", "--log-format", "json",
	}, flags...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.exited })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.Write(sc.Bytes())
			p.log.WriteByte('\n')
			p.mu.Unlock()
			var line struct{ Msg, XDS, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "meshd is serving" {
				p.xds, p.http = line.XDS, line.HTTP
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("meshd exited before serving: %v\n%s", p.err, p.logged())
	case <-time.After(10 * time.Second):
		t.Fatal("meshd did not report serving within 10s")
	}
	return p
}

func meshctl(t *testing.T, bin, server string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--server", server}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// xdsConn connects to meshd's xDS address as a proxy would, and bounds the
// test's use of it to 10 seconds; both end with the test.
func xdsConn(t *testing.T, xdsAddr string) (*grpc.ClientConn, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return conn, ctx
}

// resolve asks meshd for a cluster on demand over delta ADS, as Envoy does.
func resolve(t *testing.T, xdsAddr, cluster string) probe.Result {
	t.Helper()
	conn, ctx := xdsConn(t, xdsAddr)
	res, err := probe.Resolve(ctx, conn, &corev3.Node{Id: "it-1", Cluster: "orders"}, cluster)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// endpoints resolves a cluster and returns the addresses of its endpoints.
func endpoints(t *testing.T, xdsAddr, cluster string) []string {
	t.Helper()
	var addrs []string
	for _, l := range resolve(t, xdsAddr, cluster).Endpoints.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			addrs = append(addrs, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	slices.Sort(addrs)
	return addrs
}

// TestKill9LosesNothingAcknowledged registers through meshctl, resolves over
// xDS, kills meshd with SIGKILL, restarts it on the same data directory and
// checks every acknowledged write is still served.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	meshdBin, meshctlBin := binaries(t)
	data := t.TempDir()
	p := startMeshd(t, meshdBin, data)
	server := "http://" + strings.TrimPrefix(p.http, "http://")

	policy := filepath.Join(t.TempDir(), "payments.yaml")
	yml := "name: payments\npolicy:\n  protocol: http2\n  load_balancing: least_request\n"
	if err := os.WriteFile(policy, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	meshctl(t, meshctlBin, server, "vip", "apply", "-f", policy)
	for i, addr := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		meshctl(t, meshctlBin, server, "instance", "register", "payments",
			"--id", "p"+string(rune('1'+i)), "--address", addr, "--port", "8080", "--ttl", "1h")
	}
	meshctl(t, meshctlBin, server, "instance", "status", "payments", "p3", "DOWN")
	want := []string{"10.0.0.1", "10.0.0.2"}
	if got := endpoints(t, p.xds, "payments.vip"); !slices.Equal(got, want) {
		t.Fatalf("before kill: endpoints %v, want %v", got, want)
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited

	p2 := startMeshd(t, meshdBin, data)
	server2 := "http://" + strings.TrimPrefix(p2.http, "http://")
	if got := endpoints(t, p2.xds, "payments.vip"); !slices.Equal(got, want) {
		t.Fatalf("after kill -9: endpoints %v, want %v", got, want)
	}
	out := meshctl(t, meshctlBin, server2, "-o", "json", "vip", "get", "payments")
	if !strings.Contains(out, `"least_request"`) || !strings.Contains(out, `"http2"`) {
		t.Fatalf("VIP policy lost across kill -9:\n%s", out)
	}
	out = meshctl(t, meshctlBin, server2, "-o", "json", "instance", "list", "payments")
	for _, s := range []string{`"p1"`, `"p2"`, `"p3"`, `"DOWN"`} {
		if !strings.Contains(out, s) {
			t.Fatalf("instance list after kill -9 lacks %s:\n%s", s, out)
		}
	}
}

// TestGracefulShutdown: SIGTERM stops meshd cleanly with exit status 0,
// and a sidecar's open stream is ended by meshd (the stream closes with
// status OK), not cut when the graceful stop gives up waiting on it.
func TestGracefulShutdown(t *testing.T) {
	meshdBin, _ := binaries(t)
	p := startMeshd(t, meshdBin, t.TempDir())
	conn, ctx := xdsConn(t, p.xds)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "it-1", Cluster: "orders"}, TypeUrl: resource.ClusterType,
		ResourceNamesSubscribe: []string{"payments.vip"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the stream is served
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the sidecar's stream ended with %v, want meshd to end it (EOF)", err)
		}
		break
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("meshd exited with %v after SIGTERM, want status 0", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("meshd did not stop within 10s of SIGTERM")
	}
}
