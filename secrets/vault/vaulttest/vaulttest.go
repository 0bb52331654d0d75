// Package vaulttest runs a real Vault server for tests, bound to 127.0.0.1
// on a free port and stopped by its PID, and sets up a PKI mount the way
// meshd expects one. The binary comes from $VAULT_BIN, which `make test`
// sets after building Vault once (see tools/vault).
package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// EnvBin names the environment variable holding the Vault binary's path.
const EnvBin = "VAULT_BIN"

// SkipMessage is the one line printed when no Vault binary is available.
const SkipMessage = "vault tests skipped: no Vault binary; `make test` builds Vault v1.21.0 once (11-25 minutes) " +
	"and runs them, or set " + EnvBin + "=/path/to/vault"

// RootToken is the root token of a dev server.
const RootToken = "root"

// Bin returns the Vault binary named by $VAULT_BIN, or "" when it is not
// set. A set variable naming a missing file is an error: under `make test`
// Vault tests must run, never skip.
func Bin() (string, error) {
	bin := os.Getenv(EnvBin)
	if bin == "" {
		return "", nil
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s=%s: %w", EnvBin, bin, err)
	}
	return bin, nil
}

// Server is a running (or stopped) Vault server.
type Server struct {
	// Addr is the API address, http://127.0.0.1:port.
	Addr string
	// Token is the root token.
	Token string

	bin        string
	port       int
	persistent bool
	dir        string
	unsealKey  string
	logf       *os.File

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts `vault server -dev` with root token "root". A dev server
// keeps its state in memory: after Restart it is empty again.
func Start(tb testing.TB, bin string) *Server {
	tb.Helper()
	return start(tb, bin, false)
}

// StartServer starts a Vault server with file storage, initialised and
// unsealed with one key share. After Restart (unsealed again) its mounts,
// roles, policies and tokens are as they were, as in production.
func StartServer(tb testing.TB, bin string) *Server {
	tb.Helper()
	return start(tb, bin, true)
}

func start(tb testing.TB, bin string, persistent bool) *Server {
	tb.Helper()
	s := &Server{bin: bin, port: freePort(tb), persistent: persistent, dir: tb.TempDir()}
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
	logf, err := os.Create(filepath.Join(s.dir, "vault.log"))
	if err != nil {
		tb.Fatal(err)
	}
	s.logf = logf
	tb.Cleanup(func() {
		s.Stop(tb)
		_ = logf.Close()
		if tb.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				tb.Logf("vault log (%s):\n%s", s.Addr, tail(b, 4000))
			}
		}
	})
	if persistent {
		cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
disable_mlock = true
api_addr      = %q
`, filepath.Join(s.dir, "data"), s.port, s.Addr)
		if err := os.WriteFile(filepath.Join(s.dir, "vault.hcl"), []byte(cfg), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	s.Restart(tb)
	return s
}

// Restart starts the server again on the same port (and, with file
// storage, the same data, unsealed) and waits until it serves requests.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	args := []string{
		"server", "-dev", "-dev-root-token-id=" + RootToken,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(s.port), "-dev-no-store-token",
	}
	if s.persistent {
		args = []string{"server", "-config=" + filepath.Join(s.dir, "vault.hcl")}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = s.logf, s.logf
	cmd.Env = append(os.Environ(), "HOME="+s.dir, "VAULT_ADDR="+s.Addr)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start vault: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if err := s.ready(exited); err != nil {
		tb.Fatalf("vault at %s: %v", s.Addr, err)
	}
}

// ready waits for the server to answer, initialises it the first time
// (file storage), unseals it, and waits until it is active.
func (s *Server) ready(exited chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := s.newClient("")
	var code int
	var herr error
	for {
		code, herr = s.health(ctx)
		switch {
		case herr != nil:
		case code == http.StatusOK:
			return nil
		case code == http.StatusNotImplemented && s.persistent: // not initialised
			resp, err := c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
			if err != nil {
				return fmt.Errorf("init: %w", err)
			}
			s.unsealKey, s.Token = resp.KeysB64[0], resp.RootToken
		case code == http.StatusServiceUnavailable && s.unsealKey != "": // sealed
			if _, err := c.Sys().UnsealWithContext(ctx, s.unsealKey); err != nil {
				return fmt.Errorf("unseal: %w", err)
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("vault exited before it was ready (see its log)")
		case <-ctx.Done():
			return fmt.Errorf("not ready within a minute (last health code %d): %w", code, errors.Join(herr, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) health(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Client returns a client of the server authenticated with the root token.
func (s *Server) Client(tb testing.TB) *api.Client {
	tb.Helper()
	return s.newClient(s.rootToken())
}

func (s *Server) rootToken() string {
	if s.persistent {
		return s.Token
	}
	return RootToken
}

func (s *Server) newClient(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.AgentAddress, cfg.MaxRetries = s.Addr, "", 0
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(fmt.Sprintf("vault client: %v", err)) // only a broken default config fails here
	}
	c.SetToken(token)
	return c
}

// Stop kills the server by its PID (SIGKILL, as a crash would) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		tb.Logf("kill vault pid %d: %v", cmd.Process.Pid, err)
	}
	<-exited
}

// freePort returns a TCP port P on 127.0.0.1 such that P and P+1 were free
// a moment ago: Vault serves its API on P and its cluster port on P+1.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		next, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		_ = l.Close()
		if err == nil {
			_ = next.Close()
			return port
		}
	}
	tb.Fatal("no two adjacent free ports")
	return 0
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
