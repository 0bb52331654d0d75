package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/token"
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
		"bootstrap", "--service", "api", "--instance", "api-1", "--xds", "meshd.internal:18000",
		"--inbound-port", "8443", "--app-port", "8080", "--token-file", "api.token", "--xds-ca-file", "/etc/xspace/ca.crt",
	},
	"worker.yaml": {
		"bootstrap", "--service", "worker", "--instance", "worker-1", "--xds", "meshd.internal:18000",
		"--token-file", "worker.token", "--xds-ca-file", "/etc/xspace/ca.crt",
	},
	"dev-no-token.yaml": {"bootstrap", "--service", "demo", "--instance", "demo-1"},
}

// placeholderToken is shaped like a token of service that expires in 2100,
// so that bootstrap accepts it unverified, and says in its signature what
// to put in its place.
func placeholderToken(service string) string {
	enc := base64.RawURLEncoding.EncodeToString
	header := enc([]byte(`{"alg":"HS256","kid":"placeholder","typ":"JWT"}`))
	claims := enc([]byte(`{"iss":"xspace-mesh","aud":["xspace-mesh-xds"],"sub":"` + service + `","exp":4102444800}`))
	return header + "." + claims + ".REPLACE_WITH_meshctl_token_issue"
}

// TestReferenceBootstraps keeps envoy-configs/ what meshctl writes; run
// `go test ./cmd/meshctl -run TestReferenceBootstraps -update` after
// changing the bootstrap, and read the diff.
func TestReferenceBootstraps(t *testing.T) {
	configs, err := filepath.Abs(filepath.Join("..", "..", "envoy-configs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir) // no keyring: the placeholders are read, not verified
	for _, svc := range []string{"api", "worker"} {
		if err := os.WriteFile(filepath.Join(dir, svc+".token"), []byte(placeholderToken(svc)+"\n"), 0o600); err != nil {
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
		path := filepath.Join(configs, file)
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
	keyring, out := filepath.Join(dir, "tokens.yaml"), filepath.Join(dir, "envoy.yaml")
	tok, tokFile := writeToken(t, keyring, token.RoleService, "api", time.Hour)
	// A file written before, readable by all, must not stay so.
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"bootstrap", "--service", "api", "--instance", "api-7", "--xds", "10.0.0.9:18000",
		"--inbound-port", "9443", "--app-port", "9000", "--outbound-port", "16001", "--admin-port", "16000",
		"--token-file", tokFile, "--keyring", keyring, "--xds-ca-file", "/etc/xspace/ca.crt", "--out", out,
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
	case ads.GetGrpcServices()[0].GetInitialMetadata()[0].GetValue() != "Bearer "+tok:
		t.Errorf("initial metadata = %v; want the token", ads.GetGrpcServices()[0].GetInitialMetadata())
	case boot.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" || boot.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 16000:
		t.Errorf("admin = %v; want 127.0.0.1:16000", boot.GetAdmin().GetAddress())
	case boot.GetStaticResources().GetClusters()[0].GetType() != clusterv3.Cluster_STATIC:
		t.Errorf("an IP xDS address should make a STATIC cluster")
	}
	var up tlsv3.UpstreamTlsContext
	if err := boot.GetStaticResources().GetClusters()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatalf("the xDS cluster has no TLS transport socket: %v", err)
	}
	vc := up.GetCommonTlsContext().GetValidationContext()
	if vc.GetTrustedCa().GetFilename() != "/etc/xspace/ca.crt" || vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != names.SPIFFE(names.ControlPlane) ||
		!slices.Equal(up.GetCommonTlsContext().GetAlpnProtocols(), []string{"h2"}) || up.GetSni() != "" {
		t.Errorf("xDS TLS = %v; want the CA file, meshd's SAN, ALPN h2 and no SNI for an IP address", &up)
	}
	if strings.Contains(errOut.String(), "not checked") {
		t.Errorf("the keyring was given, yet: %s", errOut.String())
	}
}

// writeToken issues a token of role for subject from the keyring at path
// (created if missing) and writes it to a file beside it.
func writeToken(t *testing.T, path string, role token.Role, subject string, ttl time.Duration) (tok, file string) {
	t.Helper()
	kr, _, err := token.LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok, err = kr.IssueRole(role, subject, ttl); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(filepath.Dir(path), string(role)+"-"+subject+".token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tok, file
}

// TestBootstrapChecksToken: a token the sidecar could not use is refused
// before anything is written, whether the keyring is there to verify it
// or only its claims can be read; an unverified one is said to be so.
func TestBootstrapChecksToken(t *testing.T) {
	dir := t.TempDir()
	keyring := filepath.Join(dir, "tokens.yaml")
	_, good := writeToken(t, keyring, token.RoleService, "api", time.Hour)
	_, other := writeToken(t, keyring, token.RoleService, "billing", time.Hour)
	_, operator := writeToken(t, keyring, token.RoleOperator, "alice", time.Hour)
	_, forged := writeToken(t, filepath.Join(t.TempDir(), "tokens.yaml"), token.RoleService, "api", time.Hour)
	garbage := filepath.Join(dir, "garbage.token")
	if err := os.WriteFile(garbage, []byte("not-a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envoy := func(tokFile string, more ...string) []string {
		return append([]string{"bootstrap", "--service", "api", "--instance", "api-1", "--token-file", tokFile}, more...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"another service's", envoy(other, "--keyring", keyring), `for service "billing", the bootstrap for "api"`},
		{"operator's", envoy(operator, "--keyring", keyring), "operator token"},
		{"forged", envoy(forged, "--keyring", keyring), "signature is invalid"},
		{"garbage", envoy(garbage, "--keyring", keyring), "token is not usable"},
		{"garbage unverified", envoy(garbage), "token is not usable"},
		{"another service's unverified", envoy(other), `for service "billing"`},
		{"grpc token without TLS", []string{"bootstrap", "--grpc", "--service", "api", "--token-file", good, "--keyring", keyring}, "a token needs TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // no keyring at the default path
			out := filepath.Join(dir, "out.yaml")
			_ = os.Remove(out)
			var stdout, errOut bytes.Buffer
			args := append(tc.args, "--out", out)
			if code := run(t.Context(), args, strings.NewReader(""), &stdout, &errOut); code != exitUsage || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, errOut.String(), exitUsage, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a bootstrap was written")
			}
		})
	}

	t.Run("unverified but usable", func(t *testing.T) {
		t.Chdir(t.TempDir())
		var stdout, errOut bytes.Buffer
		if code := run(t.Context(), envoy(good), strings.NewReader(""), &stdout, &errOut); code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		if !strings.Contains(errOut.String(), "signature is not checked") || !strings.Contains(errOut.String(), "expires in 1h0m0s") {
			t.Errorf("stderr %q; want a note that the signature is unchecked and that the token expires soon", errOut.String())
		}
	})
	t.Run("grpc over TLS with a token file", func(t *testing.T) {
		var stdout, errOut bytes.Buffer
		args := []string{"bootstrap", "--grpc", "--service", "api", "--xds", "meshd:18000", "--token-file", good, "--keyring", keyring, "--xds-ca-file", "/etc/xspace/ca.crt"}
		if code := run(t.Context(), args, strings.NewReader(""), &stdout, &errOut); code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		var got map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		server := got["xds_servers"].([]any)[0].(map[string]any)
		want := map[string]any{
			"server_uri":      "meshd:18000",
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]any{"ca_certificate_file": "/etc/xspace/ca.crt"}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]any{"jwt_token_file": good}}},
			"server_features": []any{"xds_v3"},
		}
		if diff := cmp.Diff(want, server); diff != "" {
			t.Errorf("xds server (-want +got):\n%s", diff)
		}
	})
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

// TestBootstrapOutputFormat: -o json writes the Envoy bootstrap as JSON,
// the same Bootstrap as the YAML; a gRPC bootstrap is JSON only.
func TestBootstrapOutputFormat(t *testing.T) {
	args := []string{"bootstrap", "--service", "demo", "--instance", "demo-1"}
	var yml, js, errOut bytes.Buffer
	if code := run(t.Context(), args, strings.NewReader(""), &yml, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if code := run(t.Context(), append(args, "-o", "json"), strings.NewReader(""), &js, &errOut); code != exitOK {
		t.Fatalf("-o json: exit %d: %s", code, errOut.String())
	}
	var fromJSON, fromYAML bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js.Bytes(), &fromJSON); err != nil {
		t.Fatalf("-o json is not an Envoy Bootstrap in JSON: %v\n%s", err, js.String())
	}
	j, err := yaml.YAMLToJSON(yml.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(j, &fromYAML); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&fromJSON, &fromYAML) {
		t.Error("-o json and the YAML bootstrap differ")
	}
	errOut.Reset()
	grpcArgs := []string{"bootstrap", "--grpc", "--service", "demo", "-o", "yaml"}
	if code := run(t.Context(), grpcArgs, strings.NewReader(""), io.Discard, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "JSON only") {
		t.Errorf("--grpc -o yaml: exit %d, %q; want a usage error", code, errOut.String())
	}
}
