package await

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	True(t, "the third poll", func() bool { return n.Add(1) == 3 })
	if got := n.Load(); got != 3 {
		t.Fatalf("polled %d times, want 3", got)
	}
}

// recorder is a testing.TB that records a failure instead of ending the
// test; Fatalf ends the goroutine it was called on, as testing does.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWithinFailsWithTheLastError(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Within(r, 20*time.Millisecond, "the lease", func() error { return errors.New("lease still held by a1") })
	}()
	<-done
	if !strings.Contains(r.failed, "waiting for the lease") || !strings.Contains(r.failed, "lease still held by a1") {
		t.Fatalf("failure = %q, want what was awaited and the last error", r.failed)
	}
}
