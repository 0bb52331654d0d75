package testlog

import (
	"sync"
	"testing"
)

func TestBufferCountsLinesFromConcurrentWriters(t *testing.T) {
	var b Buffer
	log := b.Logger()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { log.Info("hello", "n", 1) })
	}
	wg.Wait()
	log.Warn("other")
	if n := b.Count("msg=hello"); n != 8 {
		t.Fatalf("Count = %d, want 8", n)
	}
	if got := b.Lines("other"); got == "" || b.Count("other") != 1 {
		t.Fatalf("Lines(other) = %q", got)
	}
}
