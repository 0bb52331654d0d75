package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	// Registers the HttpProtocolOptions type the bootstraps carry in an Any.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/config"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/token"
)

// compose is the part of docker-compose.yaml these checks read.
type compose struct {
	Services map[string]struct {
		Image       string   `json:"image"`
		Build       any      `json:"build"`
		Command     []string `json:"command"`
		NetworkMode string   `json:"network_mode"`
	} `json:"services"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return c
}

// TestComposeSidecars: every demo instance has an Envoy sidecar from the
// official image pinned in .env (TestEnvoyVersionContract), sharing its
// network namespace, started from a bootstrap that setup.sh writes.
func TestComposeSidecars(t *testing.T) {
	c := loadCompose(t)
	setup, err := os.ReadFile("setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	var sidecars int
	for name, svc := range c.Services {
		if !strings.HasPrefix(svc.Image, "${ENVOY_IMAGE") {
			continue
		}
		sidecars++
		app := strings.TrimSuffix(name, "-envoy")
		if svc.NetworkMode != "service:"+app {
			t.Errorf("%s: network_mode %q; want service:%s so the app reaches it on 127.0.0.1", name, svc.NetworkMode, app)
		}
		if _, ok := c.Services[app]; !ok {
			t.Errorf("%s: no service %s to sit beside", name, app)
		}
		i := slices.Index(svc.Command, "-c")
		if i < 0 || i+1 >= len(svc.Command) {
			t.Fatalf("%s: command %v has no -c BOOTSTRAP", name, svc.Command)
		}
		if dir, file := filepath.Split(svc.Command[i+1]); dir != "/bootstrap/" || !strings.Contains(string(setup), `--out "$out/`+file+`"`) {
			t.Errorf("%s: setup.sh writes no bootstrap %s", name, svc.Command[i+1])
		}
	}
	if sidecars != 3 {
		t.Errorf("%d Envoy sidecars; want 3 (api-1, api-2, worker)", sidecars)
	}
}

// TestComposeBuildsItsImage: a service running the locally built image
// names its build, so compose builds it rather than trying to pull it.
func TestComposeBuildsItsImage(t *testing.T) {
	for name, svc := range loadCompose(t).Services {
		if strings.HasPrefix(svc.Image, "xspace-mesh-e2e:") && svc.Build == nil {
			t.Errorf("%s runs %s but has no build section; compose would try to pull it", name, svc.Image)
		}
	}
}

// TestMeshdConfig: the config meshd runs with in the compose file loads
// and validates.
func TestMeshdConfig(t *testing.T) {
	cfg, err := config.Load("meshd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// On 0.0.0.0, it validates only in the secure configuration.
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Registry.Type != "consul" || cfg.Secrets.Type != "vault" || cfg.Secrets.Vault.ServerRole == "" || !cfg.TLS.Enabled ||
		cfg.XDS.AllowUnauthenticated || cfg.HTTP.AllowUnauthenticated || cfg.InsecureOnPurpose {
		t.Errorf("meshd.yaml: registry %s, secrets %s (server role %q), TLS %v, allow_unauthenticated xds %v http %v, insecure_on_purpose %v; "+
			"want consul, vault with a server role, TLS, tokens required on both",
			cfg.Registry.Type, cfg.Secrets.Type, cfg.Secrets.Vault.ServerRole, cfg.TLS.Enabled, cfg.XDS.AllowUnauthenticated,
			cfg.HTTP.AllowUnauthenticated, cfg.InsecureOnPurpose)
	}
	// The demo services and the tests on the host reach meshd by these.
	for _, name := range []string{"meshd", "127.0.0.1"} {
		if !slices.Contains(cfg.TLS.Names, name) {
			t.Errorf("meshd.yaml: tls.names %v lacks %s", cfg.TLS.Names, name)
		}
	}
	// The demo services reach meshd's API as http://meshd:18080.
	if !slices.Contains(cfg.HTTP.AllowedHosts, "meshd") {
		t.Errorf("meshd.yaml: http.allowed_hosts %v lacks meshd, the name the demo services use", cfg.HTTP.AllowedHosts)
	}
}

// TestSetupScript runs setup.sh with the real meshctl, as the compose
// file's setup service does, and checks what it writes: the CA it fetched,
// and Envoy bootstraps of the right node, carrying a token for the right
// service and speaking TLS to meshd with that CA.
func TestSetupScript(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "meshctl"), "../cmd/meshctl").CombinedOutput(); err != nil {
		t.Fatalf("build meshctl: %v\n%s", err, out)
	}
	keyring := filepath.Join(dir, "tokens.yaml")
	kr, _, err := token.LoadOrCreate(keyring, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bootstrap")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	const caPEM = "-----BEGIN CERTIFICATE-----\nVmF1bHQncyBDQQ==\n-----END CERTIFICATE-----\n"
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/pki/ca/pem" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, caPEM)
	}))
	defer vault.Close()
	cmd := exec.Command("sh", "setup.sh")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KEYRING="+keyring, "OUT="+out, "CA_URL="+vault.URL+"/v1/pki/ca/pem")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("setup.sh: %v\n%s", err, b)
	}
	if b, err := os.ReadFile(filepath.Join(out, "ca.crt")); err != nil || string(b) != caPEM {
		t.Errorf("ca.crt = %q, %v; want Vault's CA", b, err)
	}
	for node, want := range map[string]struct {
		service string
		inbound float64
	}{"api-1": {"api", 8443}, "api-2": {"api", 8443}, "worker-1": {"worker", 0}} {
		b, err := os.ReadFile(filepath.Join(out, node+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		var boot bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(j, &boot); err != nil {
			t.Fatalf("%s: not an Envoy bootstrap: %v", node, err)
		}
		auth := boot.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetInitialMetadata()[0].GetValue()
		claims, err := kr.Verify(strings.TrimPrefix(auth, "Bearer "))
		switch {
		case err != nil:
			t.Errorf("%s: token does not verify: %v", node, err)
		case claims.Service != want.service || boot.GetNode().GetCluster() != want.service || boot.GetNode().GetId() != node:
			t.Errorf("%s: node %v with a token for %q; want node %s of %s", node, boot.GetNode(), claims.Service, node, want.service)
		case boot.GetNode().GetMetadata().GetFields()[names.NodeInboundPortKey].GetNumberValue() != want.inbound:
			t.Errorf("%s: inbound port %v; want %v", node, boot.GetNode().GetMetadata().GetFields()[names.NodeInboundPortKey], want.inbound)
		}
		var up tlsv3.UpstreamTlsContext
		if err := boot.GetStaticResources().GetClusters()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil ||
			up.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != "/bootstrap/ca.crt" {
			t.Errorf("%s: xDS cluster TLS %v, %v; want TLS trusting /bootstrap/ca.crt", node, &up, err)
		}
	}
}

// TestScriptsParse: the compose file's shell scripts are valid sh.
func TestScriptsParse(t *testing.T) {
	for _, script := range []string{"setup.sh", "vault-pki.sh"} {
		if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", script, err, out)
		}
	}
}
