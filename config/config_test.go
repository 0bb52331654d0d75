package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/prisma-systems/xspace-mesh/registry"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if d.XDS.Address != "127.0.0.1:18000" || d.HTTP.Address != "127.0.0.1:18080" || d.DataDir != "./data" {
		t.Fatalf("defaults changed: %+v", d)
	}
}

func TestLoadOverDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.yaml")
	yml := "xds:\n  address: 127.0.0.1:19000\ndiscovery:\n  grace: 30s\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XDS.Address != "127.0.0.1:19000" || cfg.Discovery.Grace.D() != 30*time.Second {
		t.Fatalf("file not applied: %+v", cfg)
	}
	if cfg.HTTP.Address != "127.0.0.1:18080" || cfg.XDS.AdmissionRate != 2000 {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{
			"unknown field", "xds:\n  adress: 127.0.0.1:1\n",
			`unknown field "xds.adress"; the fields allowed in xds are address, `,
		},
		{"nearest field", "xds:\n  adress: 127.0.0.1:1\n", "; did you mean address?"},
		{"nearest by prefix", "discovery:\n  grace_period: 1m\n", `unknown field "discovery.grace_period"`},
		{"nested unknown field", "secrets:\n  vault:\n    approle:\n      rol_id: x\n", `unknown field "secrets.vault.approle.rol_id"`},
		{"bad duration", "discovery:\n  grace: soon\n", `discovery.grace: duration "soon": use a number with a unit`},
		{"wrong type", "xds:\n  admission_rate: fast\n", "xds.admission_rate: expected a number, got string"},
		{"wrong type in a list", "tls:\n  names: [1]\n", "tls.names[0]: expected a string, got number"},
		{"duplicate key", "data_dir: a\ndata_dir: b\n", "already set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			err := Decode([]byte(tt.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "struct") {
				t.Errorf("the error names Go's types: %v", err)
			}
		})
	}
}

func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"xds address", func(c *Config) { c.XDS.Address = "18000" }, "xds.address"},
		{"xds host", func(c *Config) { c.XDS.Address = "example.com:1" }, "xds.address"},
		{"http port", func(c *Config) { c.HTTP.Address = "127.0.0.1:99999" }, "http.address"},
		{"same address", func(c *Config) { c.HTTP.Address = c.XDS.Address }, "http.address"},
		{"admission rate", func(c *Config) { c.XDS.AdmissionRate = 0 }, "xds.admission_rate"},
		{"admission burst", func(c *Config) { c.XDS.AdmissionBurst = 0 }, "xds.admission_burst"},
		{"waiting streams", func(c *Config) { c.XDS.MaxWaitingStreams = 0 }, "xds.max_waiting_streams"},
		{"streams per peer", func(c *Config) { c.XDS.MaxStreamsPerPeer = 0 }, "xds.max_streams_per_peer"},
		{"streams per connection", func(c *Config) { c.XDS.MaxStreamsPerConnection = 0 }, "xds.max_streams_per_connection"},
		{"unknown names", func(c *Config) { c.XDS.MaxUnknownNames = 0 }, "xds.max_unknown_names"},
		{"odcds timeout", func(c *Config) { c.XDS.ODCDSTimeout = registry.Duration(2 * time.Second) }, "xds.odcds_timeout"},
		{"allowed host", func(c *Config) { c.HTTP.AllowedHosts = []string{"http://meshd"} }, "http.allowed_hosts[0]"},
		{"not found grace", func(c *Config) { c.Discovery.NotFoundGrace = c.Discovery.Grace + 1 }, "discovery.not_found_grace"},
		{"max not found", func(c *Config) { c.Discovery.MaxNotFound = 0 }, "discovery.max_not_found"},
		{"registry type", func(c *Config) { c.Registry.Type = "eureka" }, "registry.type"},
		{"sweep", func(c *Config) { c.Registry.Embedded.SweepInterval = 0 }, "registry.embedded.sweep_interval"},
		{"share", func(c *Config) { c.Registry.Embedded.SelfPreservationShare = 1.5 }, "registry.embedded.self_preservation_share"},
		{"min instances", func(c *Config) { c.Registry.Embedded.SelfPreservationMinInstances = 0 }, "registry.embedded.self_preservation_min_instances"},
		{"grace", func(c *Config) { c.Discovery.Grace = -1 }, "discovery.grace"},
		{"consul address", func(c *Config) { c.Registry.Consul.Address = "consul" }, "registry.consul.address"},
		{"consul scheme", func(c *Config) { c.Registry.Consul.Address = "ftp://127.0.0.1:8500" }, "registry.consul.address"},
		{"consul port", func(c *Config) { c.Registry.Consul.Address = "127.0.0.1:0" }, "registry.consul.address"},
		{"consul token twice", func(c *Config) { c.Registry.Consul.Token, c.Registry.Consul.TokenFile = "t", "f" }, "registry.consul.token_file"},
		{"consul datacenter", func(c *Config) { c.Registry.Consul.Datacenter = "dc/1" }, "registry.consul.datacenter"},
		{"consul kv prefix empty", func(c *Config) { c.Registry.Consul.KVPrefix = "" }, "registry.consul.kv_prefix"},
		{"consul kv prefix slash", func(c *Config) { c.Registry.Consul.KVPrefix = "/xspace/vips" }, "registry.consul.kv_prefix"},
		{"consul wait", func(c *Config) { c.Registry.Consul.WaitTime = registry.Duration(11 * time.Minute) }, "registry.consul.wait_time"},
		{"consul query timeout", func(c *Config) { c.Registry.Consul.QueryTimeout = 0 }, "registry.consul.query_timeout"},
		{"consul deregister", func(c *Config) { c.Registry.Consul.DeregisterCriticalAfter = registry.Duration(time.Second) }, "registry.consul.deregister_critical_after"},
		{"tls name", func(c *Config) { c.TLS.Names = []string{"meshd..internal"} }, "tls.names[0]"},
		{"xds beyond loopback in clear", func(c *Config) { c.XDS.Address, c.XDS.AllowUnauthenticated = "10.0.0.5:18000", false }, "xds.address"},
		{"http on every interface in clear", func(c *Config) { c.HTTP.Address, c.HTTP.AllowUnauthenticated = ":18080", false }, "http.address"},
		{"xds open beyond loopback", func(c *Config) { c.XDS.Address, c.TLS.Enabled = "0.0.0.0:18000", true }, "xds.allow_unauthenticated"},
		{"http open beyond loopback", func(c *Config) { c.HTTP.Address, c.TLS.Enabled = "[::]:18080", true }, "http.allow_unauthenticated"},
		{"vault tls without server role", func(c *Config) {
			c.TLS.Enabled, c.Secrets.Type, c.Secrets.Vault.Role, c.Secrets.Vault.Token = true, "vault", "mesh", "t"
		}, "secrets.vault.server_role"},
	}
	secure := Defaults()
	secure.XDS.Address, secure.HTTP.Address, secure.TLS.Enabled = "0.0.0.0:18000", "0.0.0.0:18080", true
	secure.XDS.AllowUnauthenticated, secure.HTTP.AllowUnauthenticated = false, false
	if err := secure.Validate(); err != nil {
		t.Fatalf("TLS and tokens on every interface rejected: %v", err)
	}
	onPurpose := Defaults()
	onPurpose.XDS.Address, onPurpose.InsecureOnPurpose = "0.0.0.0:18000", true
	if err := onPurpose.Validate(); err != nil {
		t.Fatalf("insecure_on_purpose rejected: %v", err)
	}
	both0 := Defaults()
	both0.XDS.Address, both0.HTTP.Address = "127.0.0.1:0", "127.0.0.1:0"
	if err := both0.Validate(); err != nil {
		t.Fatalf("two ephemeral ports rejected: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tt.field+":") {
				t.Fatalf("Validate() = %v, want an error starting with %q", err, tt.field+":")
			}
		})
	}
}

// TestValidateReportsEveryError: one run of Validate names every wrong
// field, within a section and across sections, so that a configuration is
// fixed in one round.
func TestValidateReportsEveryError(t *testing.T) {
	cfg := Defaults()
	cfg.XDS.AdmissionRate, cfg.XDS.MaxUnknownNames = 0, 0
	cfg.Registry.Consul.Address, cfg.Registry.Consul.QueryTimeout = "consul", 0
	cfg.Discovery.MaxNotFound = 0
	cfg.Secrets.Type, cfg.Secrets.Vault.Address = "vault", "vault:8200"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, field := range []string{
		"xds.admission_rate:", "xds.max_unknown_names:", "registry.consul.address:", "registry.consul.query_timeout:",
		"discovery.max_not_found:", "secrets.vault.address:",
	} {
		if !strings.Contains(err.Error(), "\n"+field) && !strings.HasPrefix(err.Error(), field) {
			t.Errorf("Validate() does not report %s\n%v", field, err)
		}
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	b, err := Defaults().YAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{}
	if err := Decode(b, &cfg); err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, b)
	}
	if diff := cmp.Diff(Defaults(), cfg); diff != "" {
		t.Fatalf("round trip changed the config (-defaults +loaded):\n%s", diff)
	}
}

func TestConsulSection(t *testing.T) {
	cfg := Defaults()
	yml := "registry:\n  type: consul\n  consul:\n    address: https://consul.internal:8501\n" +
		"    token: s3cret\n    kv_prefix: mesh/vips\n    stale_reads: false\n    warning_is_up: false\n"
	if err := Decode([]byte(yml), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := cfg.Registry.Consul
	if cfg.Registry.Type != "consul" || c.Address != "https://consul.internal:8501" || c.KVPrefix != "mesh/vips" ||
		c.StaleReads || c.WarningIsUp || c.WaitTime != Defaults().Registry.Consul.WaitTime {
		t.Fatalf("consul section not applied over the defaults: %+v", c)
	}
	d := Defaults().Registry.Consul
	if !d.StaleReads || !d.WarningIsUp || d.KVPrefix != "xspace/vips" || d.Address != "127.0.0.1:8500" {
		t.Fatalf("consul defaults changed: %+v", d)
	}
	b, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cret") || !strings.Contains(string(b), "token: "+Redacted) {
		t.Fatalf("the token is not redacted in the printed config:\n%s", b)
	}
	if tok, err := c.ResolveToken(); err != nil || tok != "s3cret" {
		t.Fatalf("ResolveToken = %q, %v", tok, err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Token, c.TokenFile = "", file
	if tok, err := c.ResolveToken(); err != nil || tok != "from-file" {
		t.Fatalf("ResolveToken from a file = %q, %v", tok, err)
	}
	c.TokenFile = filepath.Join(t.TempDir(), "missing")
	if _, err := c.ResolveToken(); err == nil || !strings.HasPrefix(err.Error(), "registry.consul.token_file:") {
		t.Fatalf("ResolveToken of a missing file: %v", err)
	}
}

// TestValidateSuggestsTheNearestValue: a misspelt choice gets the allowed
// value nearest it; a value near none gets the list alone.
func TestValidateSuggestsTheNearestValue(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"registry type", func(c *Config) { c.Registry.Type = "consull" }, `registry.type: "consull" is not supported; use embedded or consul; did you mean consul?`},
		{"secrets type", func(c *Config) { c.Secrets.Type = "valut" }, "did you mean vault?"},
		{"vault auth", func(c *Config) { c.Secrets.Type, c.Secrets.Vault.Auth = "vault", "aproles" }, "did you mean approle?"},
		{"log level", func(c *Config) { c.Log.Level = "warning" }, "did you mean warn?"},
		{"log format", func(c *Config) { c.Log.Format = "jsno" }, "did you mean json?"},
		{"nothing near", func(c *Config) { c.Registry.Type = "eureka" }, `"eureka" is not supported; use embedded or consul`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want it to say %q", err, tt.want)
			}
			if tt.name == "nothing near" && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("a suggestion for a value near nothing: %v", err)
			}
		})
	}
}
