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
	tests := []struct {
		name string
		args []string
		want config
	}{
		{
			name: "defaults",
			args: []string{"--name", "w"},
			want: config{
				Listen: "127.0.0.1:8090", Proxy: "127.0.0.1:15001", Name: "w", Timeout: 10 * time.Second,
				Target: "api.svip/hello", TargetAuthority: "api.svip", TargetPath: "/hello",
			},
		},
		{
			name: "target without a path",
			args: []string{"--name", "w", "--every", "1s", "--target", "api.vip", "--timeout", "2s"},
			want: config{
				Listen: "127.0.0.1:8090", Proxy: "127.0.0.1:15001", Name: "w", Timeout: 2 * time.Second,
				Every: time.Second, Target: "api.vip", TargetAuthority: "api.vip", TargetPath: "/",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFlagsRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"listen", []string{"--listen", "8090"}, "--listen"},
		{"proxy", []string{"--proxy", "127.0.0.1:http"}, "--proxy"},
		{"name", []string{"--name", ""}, "--name"},
		{"timeout", []string{"--timeout", "0s"}, "--timeout"},
		{"every", []string{"--every", "-1s"}, "--every"},
		{"target", []string{"--target", "/hello"}, "--target"},
		{"argument", []string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"--name", "w"}, tt.args...), io.Discard)
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
	for _, s := range []string{"GET /call?authority=", "-proxy", "-every"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help output lacks %q:\n%s", s, out.String())
		}
	}
}
