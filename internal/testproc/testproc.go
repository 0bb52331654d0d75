// Package testproc runs the real servers tests talk to (Consul, Vault, and
// later Envoy) as child processes: started from a binary with their output
// in a log file, polled until ready, restartable, killed by PID as a crash
// would, and their log's tail shown when the test failed.
package testproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bin returns the binary named by the environment variable env, or "" when
// it is not set. A set variable naming a missing file is an error: under
// `make test` these tests must run, never skip.
func Bin(env string) (string, error) {
	bin := os.Getenv(env)
	if bin == "" {
		return "", nil
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s=%s: %w", env, bin, err)
	}
	return bin, nil
}

// Proc is one server process, possibly started several times.
type Proc struct {
	name string
	log  *os.File

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// New prepares a process called name (in messages), logging to a file in
// dir. At the end of the test it is killed, and its log's tail is shown if
// the test failed.
func New(tb testing.TB, name, dir string) *Proc {
	tb.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proc{name: name, log: log}
	tb.Cleanup(func() {
		p.Stop(tb)
		_ = log.Close()
		if tb.Failed() {
			if b, err := os.ReadFile(log.Name()); err == nil {
				tb.Logf("%s log:\n%s", name, tail(b, 4000))
			}
		}
	})
	return p
}

// Start runs cmd with its output in the log, then calls ready every 20 ms
// until it returns nil. It fails the test if the process exits first or is
// not ready within timeout, with ready's last error.
func (p *Proc) Start(tb testing.TB, cmd *exec.Cmd, timeout time.Duration, ready func(context.Context) error) {
	tb.Helper()
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	if err := poll(exited, timeout, ready); err != nil {
		tb.Fatalf("%s: %v", p.name, err)
	}
}

func poll(exited chan struct{}, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before it was ready (see its log): %w", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s: %w", timeout, errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the process by its PID (SIGKILL, as a crash would) and waits
// for it to exit. Stopping a stopped process does nothing.
func (p *Proc) Stop(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		tb.Logf("kill %s pid %d: %v", p.name, cmd.Process.Pid, err)
	}
	<-exited
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
