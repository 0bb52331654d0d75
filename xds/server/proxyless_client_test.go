package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

// The two proxyless gRPC clients of the scenario table (proxyless_test.go),
// neither written here: grpc-go's xds:/// resolver, in process, and Node's
// @grpc/grpc-js-xds, in a child process (testdata/grpcjs/client.js). Both
// start from the bootstrap meshctl bootstrap --grpc writes, unmodified.

// Request metadata the backends act on.
const (
	// failAttemptsKey: fail with UNAVAILABLE every attempt of the call
	// that has fewer than this many attempts before it.
	failAttemptsKey = "x-fail-attempts"
	// hangKey: answer only when the call ends (a slow peer).
	hangKey = "x-hang"
)

// backend is a real gRPC server on loopback. It answers UnaryCall with its
// name in ServerId and the number of earlier attempts of the call in
// Hostname, unless the call's metadata or failing says otherwise.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name    string
	port    uint32
	failing atomic.Bool // every call fails with UNAVAILABLE
}

func (b *backend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	previous := 0
	if v := md.Get("grpc-previous-rpc-attempts"); len(v) > 0 {
		previous, _ = strconv.Atoi(v[0])
	}
	if v := md.Get(failAttemptsKey); len(v) > 0 {
		if n, _ := strconv.Atoi(v[0]); previous < n {
			return nil, status.Errorf(codes.Unavailable, "%s fails attempt %d", b.name, previous+1)
		}
	}
	if b.failing.Load() {
		return nil, status.Errorf(codes.Unavailable, "%s is failing", b.name)
	}
	if len(md.Get(hangKey)) > 0 {
		<-ctx.Done() // a slow peer: answers only when the caller gives up
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &testgrpc.SimpleResponse{ServerId: b.name, Hostname: strconv.Itoa(previous)}, nil
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, port: uint32(lis.Addr().(*net.TCPAddr).Port)}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return b
}

// callOpts are the options of one call.
type callOpts struct {
	md       map[string]string
	deadline time.Duration // 5s when 0
	// failFast makes a call fail at once while the channel has no ready
	// backend; by default a call waits for ready.
	failFast bool
}

// callResult is what a client reports of one call.
type callResult struct {
	server   string // ServerId of the answering backend
	previous int    // attempts before the one that succeeded
	code     codes.Code
	details  string
	took     time.Duration
}

func (r callResult) String() string {
	if r.code == codes.OK {
		return fmt.Sprintf("OK from %s after %d earlier attempts, %s", r.server, r.previous, r.took)
	}
	return fmt.Sprintf("%s %q after %s", r.code, r.details, r.took)
}

// proxylessClient makes calls to xds:/// targets.
type proxylessClient interface {
	call(t *testing.T, target string, o callOpts) callResult
	// alive fails if the client process died (only grpc-js has one).
	alive(t *testing.T)
}

// goClient is grpc-go's xDS resolver, with one channel per target.
type goClient struct {
	builder resolver.Builder
	mu      sync.Mutex
	conns   map[string]testgrpc.TestServiceClient
	// closers close the channels, once the whole table ran: a channel
	// closed between scenarios can make grpc-go's xDS client NACK a
	// response still in flight with "xdsChannel is closed", which is no
	// rejection of meshd's resources but would count as one.
	closers []func() error
}

func newGoClient(t *testing.T, bootstrap []byte) *goClient {
	t.Helper()
	b, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v", err)
	}
	c := &goClient{builder: b, conns: map[string]testgrpc.TestServiceClient{}}
	t.Cleanup(func() {
		for _, closeConn := range c.closers {
			_ = closeConn()
		}
	})
	return c
}

func (c *goClient) client(t *testing.T, target string) testgrpc.TestServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.conns[target]; cl != nil {
		return cl
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(c.builder), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.closers = append(c.closers, conn.Close)
	c.conns[target] = testgrpc.NewTestServiceClient(conn)
	return c.conns[target]
}

func (c *goClient) call(t *testing.T, target string, o callOpts) callResult {
	cl := c.client(t, target)
	ctx, cancel := context.WithTimeout(t.Context(), cmpOr(o.deadline, 5*time.Second))
	defer cancel()
	for k, v := range o.md {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	start := time.Now()
	resp, err := cl.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(!o.failFast))
	r := callResult{took: time.Since(start), code: status.Code(err)}
	if err != nil {
		r.details = status.Convert(err).Message()
		return r
	}
	r.server = resp.GetServerId()
	r.previous, _ = strconv.Atoi(resp.GetHostname())
	return r
}

func (c *goClient) alive(*testing.T) {}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// nodeClient is a grpc-js-xds process (testdata/grpcjs/client.js).
type nodeClient struct {
	cmd     *exec.Cmd
	stdin   *json.Encoder
	mu      sync.Mutex // guards stdin, next, pending, crash
	next    int
	pending map[int]chan callResult
	crash   string
	exited  chan struct{} // closed once the process has exited
	stderr  *syncBuffer
}

// nodeLine is one line client.js writes.
type nodeLine struct {
	Ready    bool   `json:"ready"`
	Crash    string `json:"crash"`
	ID       int    `json:"id"`
	Code     int    `json:"code"`
	Details  string `json:"details"`
	ServerID string `json:"server_id"`
	Hostname string `json:"hostname"`
	MS       int64  `json:"ms"`
}

// nodeModules returns where make grpcjs installed grpc-js-xds, or skips
// the test in one line saying what is missing.
func nodeModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("grpc-js-xds client skipped: node is not on PATH (install Node 20 and run make grpcjs)")
	}
	dir := os.Getenv("GRPCJS_NODE_MODULES")
	if dir == "" {
		t.Skip("grpc-js-xds client skipped: GRPCJS_NODE_MODULES is not set (make test installs @grpc/grpc-js-xds and sets it)")
	}
	if _, err := os.Stat(filepath.Join(dir, "@grpc", "grpc-js-xds")); err != nil {
		t.Skipf("grpc-js-xds client skipped: @grpc/grpc-js-xds is not installed in GRPCJS_NODE_MODULES=%s (run make grpcjs)", dir)
	}
	return dir
}

// startNode starts client.js with the bootstrap file and waits until it
// has loaded grpc-js-xds.
func startNode(t *testing.T, modules, bootstrapFile string) *nodeClient {
	t.Helper()
	cmd := exec.Command("node", filepath.Join("testdata", "grpcjs", "client.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "GRPC_XDS_BOOTSTRAP="+bootstrapFile)
	c := &nodeClient{cmd: cmd, pending: map[int]chan callResult{}, exited: make(chan struct{}), stderr: &syncBuffer{}}
	cmd.Stderr = c.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.stdin = json.NewEncoder(in)
	ready := make(chan struct{})
	go c.read(out, ready)
	t.Cleanup(func() {
		_ = in.Close() // client.js exits at the end of its input
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-c.exited
		}
	})
	select {
	case <-ready:
	case <-c.exited:
		t.Fatalf("grpc-js-xds client exited before it was ready: %s %s", c.crash, c.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("grpc-js-xds client not ready after 60s: %s", c.stderr.String())
	}
	return c
}

// read delivers client.js's lines until it exits.
func (c *nodeClient) read(out io.Reader, ready chan struct{}) {
	defer func() {
		_ = c.cmd.Wait()
		c.mu.Lock()
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
		c.mu.Unlock()
		close(c.exited)
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l nodeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			c.mu.Lock()
			c.crash += "unreadable line " + sc.Text() + "\n"
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		switch {
		case l.Ready:
			close(ready)
		case l.Crash != "":
			c.crash += l.Crash
		default:
			if ch := c.pending[l.ID]; ch != nil {
				delete(c.pending, l.ID)
				previous, _ := strconv.Atoi(l.Hostname)
				ch <- callResult{ // buffered: never blocks
					server: l.ServerID, previous: previous, code: codes.Code(l.Code), details: l.Details,
					took: time.Duration(l.MS) * time.Millisecond,
				}
			}
		}
		c.mu.Unlock()
	}
}

// nodeCall is one line client.js reads.
type nodeCall struct {
	ID           int               `json:"id"`
	Target       string            `json:"target"`
	MD           map[string]string `json:"md,omitempty"`
	DeadlineMS   int64             `json:"deadline_ms"`
	WaitForReady bool              `json:"wait_for_ready"`
}

func (c *nodeClient) call(t *testing.T, target string, o callOpts) callResult {
	t.Helper()
	deadline := cmpOr(o.deadline, 5*time.Second)
	ch := make(chan callResult, 1)
	c.mu.Lock()
	c.next++
	id := c.next
	c.pending[id] = ch
	err := c.stdin.Encode(nodeCall{ID: id, Target: target, MD: o.md, DeadlineMS: deadline.Milliseconds(), WaitForReady: !o.failFast})
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("grpc-js-xds client: send call: %v; %s", err, c.died())
	}
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("grpc-js-xds client died during a call to %s: %s", target, c.died())
		}
		return r
	case <-time.After(deadline + 30*time.Second):
		t.Fatalf("grpc-js-xds client: no result for a call with a %s deadline after %s", deadline, deadline+30*time.Second)
	}
	return callResult{}
}

// alive fails the test if client.js exited: no scenario may crash it.
func (c *nodeClient) alive(t *testing.T) {
	t.Helper()
	select {
	case <-c.exited:
		t.Fatalf("grpc-js-xds client died: %s", c.died())
	default:
	}
}

// died says how client.js ended, once it has.
func (c *nodeClient) died() string {
	<-c.exited
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%s (crash report: %q; stderr: %q)", c.cmd.ProcessState, c.crash, c.stderr.String())
}
