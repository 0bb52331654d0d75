package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/names"
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
	empty := filepath.Join(t.TempDir(), "empty.token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bootstrap", "--grpc"}, "service"},
		{[]string{"bootstrap", "--grpc", "--service", "Orders"}, "invalid VIP name"},
		{[]string{"bootstrap", "--grpc", "--service", "orders", "--inbound-port", "8443"}, "--inbound-port applies to Envoy"},
		{[]string{"bootstrap", "--service", "orders"}, "--instance is required"},
		{[]string{"bootstrap", "--instance", "o-1"}, "service"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o 1"}, "without spaces"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--inbound-port", "8443"}, "needs the app port"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--app-port", "8080"}, "set both or neither"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--inbound-port", "15001", "--app-port", "8080"}, "ports are both 15001"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--inbound-port", "70000", "--app-port", "8080"}, "between 1 and 65535"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--xds", "meshd"}, "host:port"},
		{[]string{"bootstrap", "--service", "orders", "--instance", "o-1", "--token-file", empty}, "is empty"},
	} {
		var out, errOut bytes.Buffer
		if code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d saying %q", tc.args, code, errOut.String(), exitUsage, tc.want)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the reference bootstraps in envoy-configs/")

// referenceBootstraps are the files in envoy-configs/ and the meshctl
// arguments that write them; the token files hold placeholders.
var referenceBootstraps = map[string][]string{
	"api.yaml": {
		"bootstrap", "--service", "api", "--instance", "api-1", "--xds", "meshd:18000",
		"--inbound-port", "8443", "--app-port", "8080", "--token-file", "api.token",
	},
	"worker.yaml": {
		"bootstrap", "--service", "worker", "--instance", "worker-1", "--xds", "meshd:18000",
		"--token-file", "worker.token",
	},
	"dev-no-token.yaml": {"bootstrap", "--service", "demo", "--instance", "demo-1"},
}

// TestReferenceBootstraps keeps envoy-configs/ what meshctl writes; run
// `go test ./cmd/meshctl -run TestReferenceBootstraps -update` after
// changing the bootstrap, and read the diff.
func TestReferenceBootstraps(t *testing.T) {
	dir := t.TempDir()
	for _, svc := range []string{"api", "worker"} {
		tok := "REPLACE_WITH_THE_OUTPUT_OF_meshctl_token_issue_--service_" + svc
		if err := os.WriteFile(filepath.Join(dir, svc+".token"), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for file, args := range referenceBootstraps {
		args = slices.Clone(args)
		for i, a := range args {
			if strings.HasSuffix(a, ".token") {
				args[i] = filepath.Join(dir, a)
			}
		}
		var out, errOut bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		path := filepath.Join("..", "..", "envoy-configs", file)
		if *update {
			if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v; run `go test ./cmd/meshctl -run TestReferenceBootstraps -update`", err)
		}
		if diff := cmp.Diff(string(want), out.String()); diff != "" {
			t.Errorf("%s is not what meshctl writes (-file +meshctl); run `go test ./cmd/meshctl -run TestReferenceBootstraps -update`:\n%s", path, diff)
		}
	}
}

// TestBootstrapEnvoy checks what an Envoy bootstrap carries and that a file
// holding a token is written private.
func TestBootstrapEnvoy(t *testing.T) {
	dir := t.TempDir()
	tokFile, out := filepath.Join(dir, "api.token"), filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(tokFile, []byte("h.p.s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A file written before, readable by all, must not stay so.
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"bootstrap", "--service", "api", "--instance", "api-7", "--xds", "10.0.0.9:18000",
		"--inbound-port", "9443", "--app-port", "9000", "--outbound-port", "16001", "--admin-port", "16000",
		"--token-file", tokFile, "--out", out,
	}
	var stdout, errOut bytes.Buffer
	if code := run(t.Context(), args, strings.NewReader(""), &stdout, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap with a token written with mode %v; want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var boot bootstrapv3.Bootstrap
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(j, &boot); err != nil {
		t.Fatalf("the bootstrap is not an Envoy Bootstrap: %v", err)
	}
	if err := boot.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	md := boot.GetNode().GetMetadata().GetFields()
	ads := boot.GetDynamicResources().GetAdsConfig()
	switch {
	case boot.GetNode().GetId() != "api-7" || boot.GetNode().GetCluster() != "api":
		t.Errorf("node = %v", boot.GetNode())
	case md[names.NodeOutboundPortKey].GetNumberValue() != 16001 || md[names.NodeInboundPortKey].GetNumberValue() != 9443 || md[names.NodeAppPortKey].GetNumberValue() != 9000:
		t.Errorf("node metadata = %v", md)
	case ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC:
		t.Errorf("ADS api type = %v; want DELTA_GRPC (on-demand CDS needs delta)", ads.GetApiType())
	case ads.GetGrpcServices()[0].GetInitialMetadata()[0].GetValue() != "Bearer h.p.s":
		t.Errorf("initial metadata = %v; want the token", ads.GetGrpcServices()[0].GetInitialMetadata())
	case boot.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" || boot.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 16000:
		t.Errorf("admin = %v; want 127.0.0.1:16000", boot.GetAdmin().GetAddress())
	case boot.GetStaticResources().GetClusters()[0].GetType() != clusterv3.Cluster_STATIC:
		t.Errorf("an IP xDS address should make a STATIC cluster")
	}
}

func grpcBootstrapJSON(xds, id, cluster string) map[string]any {
	return map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xds,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		// locality, even empty, is what grpc-js-xds requires.
		"node": map[string]any{"id": id, "cluster": cluster, "locality": map[string]any{}},
	}
}
