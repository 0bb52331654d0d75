package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBootstrapGRPC(t *testing.T) {
	t.Setenv(xdsEnv, "")
	file := filepath.Join(t.TempDir(), "bootstrap.json")
	tests := []struct {
		name string
		args []string
		read func(t *testing.T, stdout string) string
		want map[string]any
	}{
		{
			name: "stdout, defaults",
			args: []string{"bootstrap", "--grpc", "--service", "orders"},
			read: func(_ *testing.T, stdout string) string { return stdout },
			want: grpcBootstrapJSON(defaultXDS, "orders-grpc", "orders"),
		},
		{
			name: "file, every flag",
			args: []string{"bootstrap", "--grpc", "--service", "orders", "--xds", "meshd:18000", "--node-id", "o-1", "--out", file},
			read: func(t *testing.T, _ string) string {
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			},
			want: grpcBootstrapJSON("meshd:18000", "o-1", "orders"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(t.Context(), tt.args, strings.NewReader(""), &out, &errOut); code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(tt.read(t, out.String())), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("bootstrap (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBootstrapUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bootstrap", "--service", "orders"},           // no --grpc
		{"bootstrap", "--grpc"},                        // no --service
		{"bootstrap", "--grpc", "--service", "Orders"}, // not a service name
	} {
		var out, errOut bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %s", args, code, exitUsage, errOut.String())
		}
	}
}

func grpcBootstrapJSON(xds, id, cluster string) map[string]any {
	return map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xds,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{"id": id, "cluster": cluster},
	}
}
