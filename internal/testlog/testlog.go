// Package testlog is a log destination that tests read while the code
// under test writes to it from other goroutines.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Buffer collects log output; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Logger returns a text logger writing to b.
func (b *Buffer) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count returns how many lines written so far contain s.
func (b *Buffer) Count(s string) int {
	n := 0
	for l := range strings.Lines(b.String()) {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// Lines returns the lines written so far that contain any of subs.
func (b *Buffer) Lines(subs ...string) string {
	var out strings.Builder
	for l := range strings.Lines(b.String()) {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out.WriteString(l)
				break
			}
		}
	}
	return out.String()
}
