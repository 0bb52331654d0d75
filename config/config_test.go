package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{"unknown field", "xds:\n  adress: 127.0.0.1:1\n", `unknown field "adress"`},
		{"bad duration", "discovery:\n  grace: soon\n", "duration"},
		{"wrong type", "xds:\n  admission_rate: fast\n", "admission_rate"},
		{"duplicate key", "data_dir: a\ndata_dir: b\n", "already set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			err := Decode([]byte(tt.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to mention %q", err, tt.want)
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
		{"registry type", func(c *Config) { c.Registry.Type = "eureka" }, "registry.type"},
		{"sweep", func(c *Config) { c.Registry.Embedded.SweepInterval = 0 }, "registry.embedded.sweep_interval"},
		{"share", func(c *Config) { c.Registry.Embedded.SelfPreservationShare = 1.5 }, "registry.embedded.self_preservation_share"},
		{"grace", func(c *Config) { c.Discovery.Grace = -1 }, "discovery.grace"},
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

func TestYAMLRoundTrip(t *testing.T) {
	b, err := Defaults().YAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{}
	if err := Decode(b, &cfg); err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, b)
	}
	if cfg != Defaults() {
		t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, Defaults())
	}
}
