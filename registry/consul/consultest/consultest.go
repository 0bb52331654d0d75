// Package consultest runs a real Consul agent for tests: `consul agent -dev`
// bound to 127.0.0.1 on free ports with its own data directory, stopped by
// its PID. The binary comes from $CONSUL_BIN, which `make test` sets after
// building Consul once (see tools/consul).
package consultest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/internal/testproc"
)

// EnvBin names the environment variable holding the Consul binary's path.
const EnvBin = "CONSUL_BIN"

// SkipMessage is the one line printed when no Consul binary is available.
const SkipMessage = "consul tests skipped: no Consul binary; `make test` builds Consul v1.22.0 once (about 12 minutes) " +
	"and runs them, or set " + EnvBin + "=/path/to/consul"

// Bin returns the Consul binary named by $CONSUL_BIN, or "" when it is not
// set. A set variable naming a missing file is an error: under `make test`
// Consul tests must run, never skip.
func Bin() (string, error) { return testproc.Bin(EnvBin) }

// Agent is a running (or stopped) `consul agent -dev`.
type Agent struct {
	// Addr is the HTTP API address, 127.0.0.1:port.
	Addr    string
	DataDir string
	// Node is the agent's node name.
	Node string

	bin        string
	persistent bool
	ports      [6]int
	proc       *testproc.Proc
}

// Start starts `consul agent -dev` on free ports and waits until it has a
// leader. It is stopped at the end of the test. A dev agent keeps only its
// own service registrations across Restart: its catalog and KV are in memory.
func Start(tb testing.TB, bin string) *Agent {
	tb.Helper()
	return start(tb, bin, false)
}

// StartServer starts a single Consul server that keeps its state in its
// data directory, as production servers do: after Restart the catalog and
// KV are as they were. Electing a leader takes about 1.5 s.
func StartServer(tb testing.TB, bin string) *Agent {
	tb.Helper()
	return start(tb, bin, true)
}

func start(tb testing.TB, bin string, persistent bool) *Agent {
	tb.Helper()
	a := &Agent{bin: bin, DataDir: tb.TempDir(), persistent: persistent}
	for i := range a.ports {
		// A port freed a moment ago can come back: keep the six distinct.
		for a.ports[i] = freePort(tb); slices.Contains(a.ports[:i], a.ports[i]); {
			a.ports[i] = freePort(tb)
		}
	}
	a.Addr = "127.0.0.1:" + strconv.Itoa(a.ports[0])
	a.Node = "consul-" + strconv.Itoa(a.ports[0])
	a.proc = testproc.New(tb, "consul", tb.TempDir())
	a.Restart(tb)
	return a
}

// Restart starts the agent again, on the same ports and data directory,
// and waits until it has a leader.
func (a *Agent) Restart(tb testing.TB) {
	tb.Helper()
	p := a.ports
	mode := []string{"-dev"}
	if a.persistent {
		mode = []string{"-server", "-bootstrap-expect", "1", "-hcl", "performance { raft_multiplier = 1 }"}
	}
	args := append([]string{"agent"}, mode...)
	args = append(args, "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-node", a.Node, "-data-dir", a.DataDir, "-log-level", "warn",
		"-http-port", strconv.Itoa(p[0]), "-grpc-port", strconv.Itoa(p[1]), "-grpc-tls-port", "-1",
		"-dns-port", strconv.Itoa(p[2]), "-serf-lan-port", strconv.Itoa(p[3]),
		"-serf-wan-port", strconv.Itoa(p[4]), "-server-port", strconv.Itoa(p[5]),
		// Each watched VIP holds two long-polls from one client address.
		"-hcl", "limits { http_max_conns_per_client = 10000 }",
	)
	a.proc.Start(tb, exec.Command(a.bin, args...), 30*time.Second, func(ctx context.Context) error {
		leader, err := a.leader(ctx)
		if err == nil && leader == "" {
			err = fmt.Errorf("consul at %s has no leader yet", a.Addr)
		}
		return err
	})
}

func (a *Agent) leader(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+"/v1/status/leader", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var leader string
	if err := json.NewDecoder(resp.Body).Decode(&leader); err != nil {
		return "", err
	}
	return leader, nil
}

// Stop kills the agent by its PID (SIGKILL, as a crash would) and waits
// for it to exit. Stopping a stopped agent does nothing.
func (a *Agent) Stop(tb testing.TB) {
	tb.Helper()
	a.proc.Stop(tb)
}

// freePort returns a port that was free on 127.0.0.1 for TCP and UDP a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	tb.Fatal("no free port")
	return 0
}
