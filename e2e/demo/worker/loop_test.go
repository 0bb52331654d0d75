package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCallEveryCallsTheTargetAndLogs(t *testing.T) {
	sidecar, reqs := startSidecar(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello from api-1")
	})
	cfg := config{
		Proxy: sidecar.Listener.Addr().String(), Timeout: 5 * time.Second, Every: 20 * time.Millisecond,
		TargetAuthority: "api.svip", TargetPath: "/hello",
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		callEvery(ctx, newCaller(cfg), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	defer func() {
		cancel()
		<-done
	}()

	deadline := time.After(10 * time.Second)
	for i := range 2 {
		select {
		case r := <-reqs:
			if r.host != "api.svip" || r.uri != "/hello" {
				t.Errorf("call %d reached the sidecar with Host %q URI %q; want api.svip /hello", i, r.host, r.uri)
			}
		case <-deadline:
			t.Fatalf("the loop made %d calls in 10s; want 2", i)
		}
	}
	want := `status=200`
	for !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), `body="hello from api-1"`) {
		select {
		case <-deadline:
			t.Fatalf("logs lack the outcome %s:\n%s", want, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
