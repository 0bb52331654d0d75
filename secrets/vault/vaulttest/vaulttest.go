// Package vaulttest runs a real Vault server for tests, bound to 127.0.0.1
// on a free port and stopped by its PID, and sets up a PKI mount the way
// meshd expects one. The binary comes from $VAULT_BIN, which `make test`
// sets after building Vault once (see tools/vault).
package vaulttest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/prisma-systems/xspace-mesh/internal/testproc"
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
func Bin() (string, error) { return testproc.Bin(EnvBin) }

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
	proc       *testproc.Proc
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
	s.proc = testproc.New(tb, "vault", s.dir)
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
	cmd.Env = append(os.Environ(), "HOME="+s.dir, "VAULT_ADDR="+s.Addr)
	s.proc.Start(tb, cmd, time.Minute, s.ready)
}

// ready reports whether the server is active, initialising it the first
// time (file storage) and unsealing it on the way.
func (s *Server) ready(ctx context.Context) error {
	code, err := s.health(ctx)
	if err != nil {
		return err
	}
	c := s.newClient("")
	switch {
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
	return fmt.Errorf("vault at %s answers health code %d", s.Addr, code)
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
	s.proc.Stop(tb)
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
