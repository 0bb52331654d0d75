package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMeshdToExit runs meshd on dataDir and free ports, expecting it to exit
// on its own within 20 seconds, and returns its stderr and exit error.
func runMeshdToExit(t *testing.T, bin, dataDir string) (string, error) {
	t.Helper()
	return runToExit(t, bin, "--data-dir", dataDir, "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0")
}

// runToExit runs meshd with args, expecting it to exit on its own within
// 20 seconds, and returns its stderr and exit error.
func runToExit(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return stderr.String(), err
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("meshd %v still running 20s after starting (then killed: %v):\n%s", args, <-done, stderr.String())
		return "", nil
	}
}

// TestMeshdRefusesDamagedRegistry: meshd that finds its registry.db emptied
// or truncated beside the CA and keyring it created earlier stops with an
// error naming the file and what to do, without a crash; moved away, the
// file is a fresh start.
func TestMeshdRefusesDamagedRegistry(t *testing.T) {
	meshdBin, _ := binaries(t)
	tests := []struct {
		name   string
		damage func(path string) error
		why    string
	}{
		{"emptied", func(path string) error { return os.Truncate(path, 0) }, "is empty (0 bytes)"},
		{"truncated", func(path string) error {
			info, err := os.Stat(path)
			if err != nil {
				return err
			}
			return os.Truncate(path, info.Size()/2)
		}, "is truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			p := startMeshd(t, meshdBin, data)
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-p.exited
			path := filepath.Join(data, "registry.db")
			if err := tt.damage(path); err != nil {
				t.Fatal(err)
			}
			stderr, err := runMeshdToExit(t, meshdBin, data)
			if code := exitCode(err); code != 1 {
				t.Errorf("meshd exited with status %d (%v), want 1", code, err)
			}
			for _, says := range []string{tt.why, path, "restore it from a backup", "mv " + path} {
				if !strings.Contains(stderr, says) {
					t.Errorf("meshd's log does not say %q:\n%s", says, stderr)
				}
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "SIGBUS") {
				t.Errorf("meshd crashed instead of refusing:\n%s", stderr)
			}
			if err := os.Rename(path, path+".damaged"); err != nil {
				t.Fatal(err)
			}
			startMeshd(t, meshdBin, data) // fails the test unless meshd serves
		})
	}
}

// exitCode is the exit status in err, 0 for nil, -1 if it has none.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
