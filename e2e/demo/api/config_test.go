package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlags(t *testing.T) {
	got, err := parseFlags([]string{
		"--listen", "0.0.0.0:9090", "--name", "api-1", "--meshd", "http://meshd:18080",
		"--address", "10.0.0.7", "--secure-port", "15443", "--zone", "z1", "--ttl", "6s", "--heartbeat", "2s",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		Listen: "0.0.0.0:9090", Name: "api-1", VIP: "api", Meshd: "http://meshd:18080", Address: "10.0.0.7",
		Port: 9090, SecurePort: 15443, Zone: "z1", TTL: 6 * time.Second, Heartbeat: 2 * time.Second,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"listen", []string{"--listen", "8080"}, "--listen"},
		{"name", []string{"--name", "a b"}, "--name"},
		{"vip", []string{"--vip", "API"}, "--vip"},
		{"meshd url", []string{"--meshd", "meshd:18080", "--address", "10.0.0.1"}, "--meshd"},
		{"address required", []string{"--meshd", "http://meshd:18080"}, "--address is required"},
		{"address", []string{"--address", "meshd"}, "--address"},
		{"port", []string{"--port", "70000"}, "--port"},
		{"port of :0", []string{"--listen", "127.0.0.1:0", "--meshd", "http://m:1", "--address", "10.0.0.1"}, "--port is required"},
		{"secure port", []string{"--secure-port", "65536"}, "--secure-port"},
		{"ttl fraction", []string{"--ttl", "1500ms"}, "--ttl"},
		{"heartbeat", []string{"--ttl", "5s", "--heartbeat", "5s"}, "--heartbeat"},
		{"argument", []string{"extra"}, "unexpected argument"},
		{"token without meshd", []string{"--token-file", "api.token"}, "give --meshd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"--name", "api-1"}, tt.args...), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseFlags(%q) = %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	if _, err := parseFlags([]string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	for _, s := range []string{"POST /admin/fail", "-secure-port", "-heartbeat"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help output lacks %q:\n%s", s, out.String())
		}
	}
}
