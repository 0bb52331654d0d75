//go:build unix

package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// The memory benchmark (and BenchmarkFanout/server=child) runs the control
// plane in a child process, this test binary again with only
// TestBenchServerProcess selected, so that what it measures is the
// server's alone: the clients live in the benchmark process.
const (
	serverProcessEnv = "XSPACE_BENCH_SERVER_VIPS"
	// heapProfileEnv names a file for the child's heap profile, taken while
	// it holds the streams (go tool pprof -sample_index=inuse_space FILE).
	heapProfileEnv = "XSPACE_BENCH_SERVER_HEAPPROFILE"
	// cpuProfileEnv names a file for the child's CPU profile, from the
	// moment it is ready until it exits.
	cpuProfileEnv = "XSPACE_BENCH_SERVER_CPUPROFILE"
	// memPoolVIPs is the pool the streams' clusters come from.
	memPoolVIPs = 1000
	// memClusters is how many clusters each stream holds.
	memClusters = 20
)

// memReport is what the child reports of itself, after two GCs.
type memReport struct {
	// HeapAlloc is the live heap (after the GCs); HeapInuse also counts
	// the free space of spans in use.
	HeapAlloc  uint64 `json:"heap_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	RSS        uint64 `json:"rss"`
	// PeakRSS is the most RSS since the last GET /mem?reset=1 (VmHWM).
	PeakRSS uint64 `json:"peak_rss"`
	// RSSAnon is the RSS that is not the mapped binary (RssAnon): what
	// the process allocated.
	RSSAnon uint64 `json:"rss_anon"`
	// Runtime is where the runtime's memory is (runtime/metrics
	// /memory/classes): see runtimeClasses.
	Runtime    map[string]uint64 `json:"runtime"`
	Goroutines int               `json:"goroutines"`
	Streams    int               `json:"streams"`
	Watched    int               `json:"watched"`
}

// runtimeClasses sums the runtime's memory classes (runtime/metrics,
// /memory/classes/...) into the parts BenchmarkUnknownNameFlood reports:
// live objects, free space in spans in use, free pages not returned to the
// OS, goroutine stacks, and the runtime's own metadata (span and GC
// structures, caches, profiling buckets), which it keeps once made.
var runtimeClasses = map[string][]string{
	"objects": {"/memory/classes/heap/objects:bytes"},
	"unused":  {"/memory/classes/heap/unused:bytes"},
	"free":    {"/memory/classes/heap/free:bytes"},
	"stacks":  {"/memory/classes/heap/stacks:bytes", "/memory/classes/os-stacks:bytes"},
	"metadata": {
		"/memory/classes/metadata/mcache/free:bytes", "/memory/classes/metadata/mcache/inuse:bytes",
		"/memory/classes/metadata/mspan/free:bytes", "/memory/classes/metadata/mspan/inuse:bytes",
		"/memory/classes/metadata/other:bytes", "/memory/classes/other:bytes", "/memory/classes/profiling/buckets:bytes",
	},
}

// readRuntimeClasses reads runtimeClasses now.
func readRuntimeClasses() map[string]uint64 {
	var samples []metrics.Sample
	for _, names := range runtimeClasses {
		for _, n := range names {
			samples = append(samples, metrics.Sample{Name: n})
		}
	}
	metrics.Read(samples)
	byName := map[string]uint64{}
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			byName[s.Name] = s.Value.Uint64()
		}
	}
	out := map[string]uint64{}
	for part, names := range runtimeClasses {
		for _, n := range names {
			out[part] += byName[n]
		}
	}
	return out
}

// TestBenchServerProcess is not a test: benchmarks run the test binary
// again with only this selected. It serves a mesh on loopback with VIPs
// svc-00000... registered, prints "ready <xds addr> <http addr>", answers
// GET /mem, GET /cpu, GET /waiting, GET /heap and POST /register on the HTTP address, and exits
// when its stdin closes. With XSPACE_BENCH_SERVER_CPUPROFILE=FILE it
// writes there its CPU profile from the moment it is ready (after its
// VIPs are registered) until it exits.
func TestBenchServerProcess(t *testing.T) {
	vips, err := strconv.Atoi(os.Getenv(serverProcessEnv))
	if err != nil {
		t.Skip("server process of the benchmarks")
	}
	kind := os.Getenv(peerEnv)
	var (
		m      *mesh
		xds    string
		change func(context.Context, registry.Instance) error
	)
	switch kind {
	case "", "meshd":
		m = newMesh(t)
		populate(t, m, vips)
		xds = m.addr
		change = func(ctx context.Context, inst registry.Instance) error {
			_, err := m.store.Register(ctx, inst)
			return err
		}
	default:
		xds, change = servePeer(t, kind, vips)
	}
	mux := http.NewServeMux()
	// GET /mem?free=1 also returns freed memory to the OS first (what the
	// runtime's background scavenger does over minutes); ?reset=1 then
	// restarts the peak RSS.
	mux.HandleFunc("GET /mem", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		runtime.GC()
		if r.URL.Query().Has("free") {
			debug.FreeOSMemory()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rep := memReport{
			HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, RSS: procStatus("VmRSS:"), PeakRSS: procStatus("VmHWM:"),
			RSSAnon: procStatus("RssAnon:"), Runtime: readRuntimeClasses(), Goroutines: runtime.NumGoroutine(),
		}
		if m != nil {
			rep.Streams, rep.Watched = len(m.srv.Proxies()), len(m.disc.Watched())
		}
		_ = json.NewEncoder(w).Encode(rep)
		if r.URL.Query().Has("reset") {
			_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
		}
	})
	// POST /forget moves discovery's clock past every grace period and
	// forgets what no stream holds.
	mux.HandleFunc("POST /forget", func(http.ResponseWriter, *http.Request) {
		if m != nil {
			m.skew.Add(int64(24 * time.Hour))
			m.disc.ForgetIdle()
		}
	})
	mux.HandleFunc("GET /cpu", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, cpuTime())
	})
	// GET /waiting?type=URL counts meshd's streams waiting for a change of
	// that type, every request of theirs handled (cache.Cache.Waiting).
	mux.HandleFunc("GET /waiting", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if m != nil {
			n = m.cache.Waiting(r.URL.Query().Get("type"))
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("GET /heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})
	// POST /register?vip=&id=&addr= registers an UP instance and answers
	// with the wall-clock time (Unix ns) at which the write started.
	mux.HandleFunc("POST /register", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		inst := registry.Instance{
			VIP: q.Get("vip"), ID: q.Get("id"), Address: q.Get("addr"),
			Port: 8080, Status: registry.StatusUp, Zone: "zone-a",
		}
		start := time.Now()
		if err := change(r.Context(), inst); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, start.UnixNano())
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	defer func() { _ = hs.Close() }()
	// The profile starts once the VIPs are registered: it is of serving.
	if path := os.Getenv(cpuProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				t.Error(err)
			}
		}()
	}
	fmt.Printf("ready %s %s\n", xds, lis.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// procStatus reads a size (VmRSS:, VmHWM:) of this process from /proc, or
// 0 where there is none.
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// serverProcess is a control plane running in a child process.
type serverProcess struct {
	xds, http string
}

func startServerProcess(tb testing.TB, vips int) *serverProcess {
	return startPeerProcess(tb, "meshd", vips)
}

// startPeerProcess is startServerProcess for a peer: meshd, stock or floor
// (peers_test.go). env is added to the child's environment, overriding
// this process's.
func startPeerProcess(tb testing.TB, peer string, vips int, env ...string) *serverProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchServerProcess$")
	cmd.Env = append(os.Environ(), serverProcessEnv+"="+strconv.Itoa(vips), peerEnv+"="+peer)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ready" {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return &serverProcess{xds: f[1], http: "http://" + f[2]}
		}
	}
	tb.Fatalf("server process ended before it was ready: %v", sc.Err())
	return nil
}

func (p *serverProcess) get(tb testing.TB, path string) io.ReadCloser {
	tb.Helper()
	resp, err := http.Get(p.http + path)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.Body
}

func (p *serverProcess) mem(tb testing.TB) memReport { return p.memAt(tb, "/mem") }

// memAt reads the child's memory report at path (/mem with its options).
func (p *serverProcess) memAt(tb testing.TB, path string) memReport {
	tb.Helper()
	body := p.get(tb, path)
	defer func() { _ = body.Close() }()
	var r memReport
	if err := json.NewDecoder(body).Decode(&r); err != nil {
		tb.Fatal(err)
	}
	return r
}

// cpu is the user and system CPU time the child has used, in ns.
func (p *serverProcess) cpu(tb testing.TB) int64 {
	tb.Helper()
	return p.number(tb, "/cpu")
}

// waiting is how many of the child's streams wait for a change of typeURL
// with every request of theirs handled (GET /waiting).
func (p *serverProcess) waiting(tb testing.TB, typeURL string) int {
	tb.Helper()
	return int(p.number(tb, "/waiting?type="+url.QueryEscape(typeURL)))
}

// number is the integer the child answers at path.
func (p *serverProcess) number(tb testing.TB, path string) int64 {
	tb.Helper()
	body := p.get(tb, path)
	defer func() { _ = body.Close() }()
	b, err := io.ReadAll(body)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		tb.Fatalf("GET %s: %q: %v", path, b, err)
	}
	return n
}

func (p *serverProcess) heapProfile(tb testing.TB, path string) {
	tb.Helper()
	body := p.get(tb, "/heap")
	defer func() { _ = body.Close() }()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// register is a registerFunc for the child's registry.
func (p *serverProcess) register(tb testing.TB, inst registry.Instance) time.Time {
	tb.Helper()
	q := url.Values{"vip": {inst.VIP}, "id": {inst.ID}, "addr": {inst.Address}}
	resp, err := http.Post(p.http+"/register?"+q.Encode(), "", nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	ns, err := strconv.ParseInt(string(body), 10, 64)
	if err != nil {
		tb.Fatalf("register: %s %q", resp.Status, body)
	}
	return time.Unix(0, ns)
}

// waitStreams waits until the server holds want streams and at most a
// few more goroutines than maxGoroutines.
func (p *serverProcess) waitStreams(tb testing.TB, want, maxGoroutines int) {
	tb.Helper()
	what := fmt.Sprintf("%d streams and about %d goroutines", want, maxGoroutines)
	await.Within(tb, time.Minute, what, func() error {
		r := p.mem(tb)
		if r.Streams == want && r.Goroutines <= maxGoroutines+10 {
			return nil
		}
		return fmt.Errorf("server holds %d streams and %d goroutines", r.Streams, r.Goroutines)
	})
}

// settled reads the child's memory once what its streams sent is handled.
// Nothing the child reports counts the requests it handled (an ACK, which
// re-arms a watch, changes no count), so this is the first read whose
// goroutine count equals the previous read's: every stream's goroutines
// are started, and its last ACK, sent before openProxies returned, takes
// microseconds against the milliseconds of a read (two GCs).
func (p *serverProcess) settled(tb testing.TB) memReport {
	tb.Helper()
	last := p.mem(tb)
	await.Within(tb, time.Minute, "the server's goroutines to settle", func() error {
		r := p.mem(tb)
		if r.Goroutines == last.Goroutines {
			last = r
			return nil
		}
		err := fmt.Errorf("%d goroutines, then %d", last.Goroutines, r.Goroutines)
		last = r
		return err
	})
	return last
}

// holdClusters is one proxy holding its clusters: its own connection and a
// delta stream that subscribed CDS, then EDS, to every cluster, received
// and ACKed both answers. The stream stays open until ctx ends or the
// connection is closed.
func holdClusters(ctx context.Context, addr string, id int, clusters []string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, envoyLike()...)
	if err != nil {
		return nil, err
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		node := &corev3.Node{Id: fmt.Sprintf("proxy-%d", id), Cluster: "orders"}
		_, err = subscribeAndAck(stream, node, cds, clusters)
		if err == nil {
			_, err = subscribeAndAck(stream, nil, eds, clusters)
		}
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy %d: %w", id, err)
	}
	return conn, nil
}

// openProxies opens n proxies, eight at a time, each holding memClusters
// clusters of the pool: proxy i holds VIPs i, i+50, i+100, ... (mod 1,000).
func openProxies(tb testing.TB, ctx context.Context, addr string, n int) []*grpc.ClientConn {
	tb.Helper()
	conns := make([]*grpc.ClientConn, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				clusters := make([]string, memClusters)
				for k := range clusters {
					clusters[k] = names.Cluster(benchVIP((i+k*memPoolVIPs/memClusters)%memPoolVIPs), false)
				}
				conn, err := holdClusters(ctx, addr, i, clusters)
				if err != nil {
					errs <- err
					continue
				}
				conns[i] = conn
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(conns)
		tb.Fatal(err)
	}
	return conns
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}
