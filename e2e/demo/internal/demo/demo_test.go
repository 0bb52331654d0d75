package demo

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPort(t *testing.T) {
	if p, err := Port("127.0.0.1:8080", "x"); err != nil || p != 8080 {
		t.Fatalf("Port = %d, %v", p, err)
	}
	for _, bad := range []string{"8080", "host:http", "host:70000"} {
		if _, err := Port(bad, "127.0.0.1:8080"); err == nil {
			t.Errorf("Port(%q) accepted it", bad)
		}
	}
}

// TestServeDrains: Serve answers until its context ends, then calls
// beforeDrain and returns; an address it cannot listen on is an error.
func TestServeDrains(t *testing.T) {
	if err := Serve(context.Background(), "127.0.0.1:-1", http.NotFoundHandler(), slog.New(slog.DiscardHandler), nil); err == nil ||
		!strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Serve on a bad address: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, "127.0.0.1:0", http.NotFoundHandler(), slog.New(slog.DiscardHandler), func(context.Context) { close(drained) })
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(ShutdownTimeout + time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	select {
	case <-drained:
	default:
		t.Fatal("beforeDrain was not called")
	}
}
