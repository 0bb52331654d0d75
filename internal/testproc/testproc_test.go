package testproc

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartPollsUntilReadyAndStopKills(t *testing.T) {
	p := New(t, "sleeper", t.TempDir())
	calls := 0
	p.Start(t, exec.Command("sh", "-c", "echo started; exec sleep 60"), 5*time.Second, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("ready polled %d times, want 3", calls)
	}
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	p.Stop(t)
	select {
	case <-exited:
	default:
		t.Fatal("Stop returned before the process exited")
	}
	p.Stop(t) // a stopped process: nothing happens
}

func TestPollFailsFastWhenTheProcessDies(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	start := time.Now()
	err := poll(exited, time.Minute, func(context.Context) error { return errors.New("refused") })
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("poll = %v, want an exit error carrying the last readiness error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("poll waited for its timeout although the process had exited")
	}
}

func TestBin(t *testing.T) {
	t.Setenv("TESTPROC_BIN", "")
	if bin, err := Bin("TESTPROC_BIN"); bin != "" || err != nil {
		t.Fatalf("unset: %q, %v", bin, err)
	}
	t.Setenv("TESTPROC_BIN", filepath.Join(t.TempDir(), "missing"))
	if _, err := Bin("TESTPROC_BIN"); err == nil {
		t.Fatal("a missing binary was accepted")
	}
}
