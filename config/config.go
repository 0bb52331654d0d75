// Package config is meshd's configuration: defaults, decoded from one YAML
// file on top of them (unknown fields rejected), overridden by flags, and
// validated section by section with errors that name the field.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/consul"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/server"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// Config is everything meshd reads at start.
type Config struct {
	// DataDir holds the embedded registry's database (unused with Consul).
	DataDir   string    `json:"data_dir"`
	Log       Log       `json:"log"`
	XDS       XDS       `json:"xds"`
	HTTP      HTTP      `json:"http"`
	Registry  Registry  `json:"registry"`
	Discovery Discovery `json:"discovery"`
	Secrets   Secrets   `json:"secrets"`
	TLS       TLS       `json:"tls"`
	// InsecureOnPurpose lets meshd serve beyond loopback without TLS, or
	// with xds.allow_unauthenticated or http.allow_unauthenticated, which
	// it otherwise refuses: for a network that is private on purpose (a
	// test lab), never for production.
	InsecureOnPurpose bool `json:"insecure_on_purpose"`
}

// TLS configures TLS on both listeners (xDS and HTTP). meshd's serving
// certificate comes from the certificate source (secrets): the embedded
// CA, or Vault PKI's secrets.vault.server_role. It is renewed like the
// services' identities, and served from the next handshake on.
type TLS struct {
	Enabled bool `json:"enabled"`
	// Names are the DNS names and IP addresses meshd is reached by, put in
	// its certificate; empty means localhost, 127.0.0.1, ::1, the
	// machine's host name and the listeners' own addresses.
	Names []string `json:"names"`
}

// Log configures structured logging.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn, error
	Format string `json:"format"` // text, json
}

// XDS configures the gRPC xDS server.
type XDS struct {
	Address string `json:"address"`
	// AdmissionRate is how many new streams per second are admitted; a
	// reconnecting fleet queues instead of arriving at once, streams that
	// present a valid token ahead of those that do not.
	AdmissionRate  float64 `json:"admission_rate"`
	AdmissionBurst int     `json:"admission_burst"`
	// MaxWaitingStreams bounds the streams waiting for admission; one more
	// is refused with UNAVAILABLE (the client retries with backoff).
	MaxWaitingStreams int `json:"max_waiting_streams"`
	// MaxStreamsPerPeer bounds the streams one client address may have
	// open or waiting; one more is refused with RESOURCE_EXHAUSTED.
	MaxStreamsPerPeer int `json:"max_streams_per_peer"`
	// MaxStreamsPerConnection bounds the concurrent streams of one
	// HTTP/2 connection; a client opening more waits for one to end.
	MaxStreamsPerConnection uint32 `json:"max_streams_per_connection"`
	// MaxUnknownNames bounds the names of one type a stream holds that do
	// not exist; past it the oldest is no longer tracked for that stream
	// (it is not told if that name appears later). The stream itself is
	// never refused for it.
	MaxUnknownNames int `json:"max_unknown_names"`
	// ODCDSTimeout is how long a sidecar holds a request for a cluster it
	// lacks while it asks meshd (the on-demand filter's timeout in the
	// listeners meshd serves). meshd answers at once; it matters when meshd
	// is unreachable, and for a name the sidecar was told does not exist,
	// which Envoy does not ask for again.
	ODCDSTimeout registry.Duration `json:"odcds_timeout"`
	// TokenKeyring is the file of keys that sign and verify streams' bearer
	// tokens; empty means <data_dir>/tokens.yaml, created on first start.
	// Replicas must share one file.
	TokenKeyring string `json:"token_keyring"`
	// AllowUnauthenticated admits streams that present no token, for
	// development: they receive clusters but never an identity secret. Set
	// it to false in production. An invalid token is refused either way.
	AllowUnauthenticated bool `json:"allow_unauthenticated"`
}

// Keyring returns the token keyring's path.
func (c Config) Keyring() string {
	if c.XDS.TokenKeyring != "" {
		return c.XDS.TokenKeyring
	}
	return filepath.Join(c.DataDir, "tokens.yaml")
}

// Effective fills in the paths that default to places in data_dir
// (xds.token_keyring, secrets.embedded.dir), so that --print-config and
// /debug/config show the files in effect rather than an empty string.
// meshd applies it once the file and the flags are read.
func (c Config) Effective() Config {
	c.XDS.TokenKeyring = c.Keyring()
	if c.Secrets.Embedded.Dir == "" {
		c.Secrets.Embedded.Dir = filepath.Join(c.DataDir, "ca")
	}
	return c
}

// HTTP configures the REST API, metrics, health and debug server.
type HTTP struct {
	Address string `json:"address"`
	// AllowedHosts are names, besides meshd's own addresses, localhost and
	// the machine's host name, that requests may carry in their Host
	// header (the DNS names meshd is reached by). Any other Host is refused,
	// so a web page cannot drive the API through DNS rebinding. "*" allows
	// every Host.
	AllowedHosts []string `json:"allowed_hosts"`
	// AllowUnauthenticated lets requests without a token do everything on
	// the REST API and debug endpoints: zero-setup development on
	// loopback. When false, writes need a token (a service's own for its
	// instances, an operator's for the rest) and so do reads, unless
	// OpenReads. /healthz, /readyz and /metrics are always open.
	AllowUnauthenticated bool `json:"allow_unauthenticated"`
	// OpenReads lets requests without a token read (GET).
	OpenReads bool `json:"open_reads"`
}

// Registry selects and configures the service registry.
type Registry struct {
	Type     string   `json:"type"` // embedded or consul
	Embedded Embedded `json:"embedded"`
	Consul   Consul   `json:"consul"`
}

// Embedded configures the embedded registry.
type Embedded struct {
	SweepInterval registry.Duration `json:"sweep_interval"`
	// SelfPreservationShare is the share of the instances renewing since
	// start that may miss their lease at once before expiry is suspended.
	SelfPreservationShare float64 `json:"self_preservation_share"`
	// SelfPreservationMinInstances is the smallest renewing fleet in which
	// expiry is ever suspended; 1 means no minimum.
	SelfPreservationMinInstances int `json:"self_preservation_min_instances"`
}

// Consul configures the Consul registry (registry.type: consul).
type Consul struct {
	// Address of the Consul agent: host:port or http(s)://host:port.
	Address string `json:"address"`
	// Token is the ACL token; printed redacted. Prefer token_file.
	Token Secret `json:"token"`
	// TokenFile holds the ACL token, read at start.
	TokenFile string `json:"token_file"`
	// Datacenter to read from and write KV to; empty means the agent's.
	Datacenter string `json:"datacenter"`
	// KVPrefix is where VIP policies live: <kv_prefix>/<vip>.
	KVPrefix string `json:"kv_prefix"`
	// StaleReads lets any Consul server answer reads, not only the leader.
	StaleReads bool `json:"stale_reads"`
	// WarningIsUp routes to instances whose checks warn; false makes them DOWN.
	WarningIsUp bool `json:"warning_is_up"`
	// WaitTime bounds one blocking query of a watched VIP.
	WaitTime registry.Duration `json:"wait_time"`
	// QueryTimeout bounds every other request to Consul.
	QueryTimeout registry.Duration `json:"query_timeout"`
	// DeregisterCriticalAfter is how long an instance registered through
	// meshd may stay critical (missed heartbeats) before Consul removes it.
	DeregisterCriticalAfter registry.Duration `json:"deregister_critical_after"`
}

// Secret is a string that prints redacted, so a token in the config never
// shows in --print-config or /debug/config.
type Secret string

// Redacted is how a non-empty Secret prints.
const Redacted = "REDACTED"

// MarshalJSON writes "" for an empty secret and Redacted otherwise.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s == "" {
		return []byte(`""`), nil
	}
	return json.Marshal(Redacted)
}

// ResolveToken returns the ACL token, read from token_file when it is set.
func (c Consul) ResolveToken() (string, error) {
	if c.TokenFile == "" {
		return string(c.Token), nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("registry.consul.token_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Discovery configures on-demand resolution.
type Discovery struct {
	// Grace is how long a VIP no proxy holds stays watched.
	Grace registry.Duration `json:"grace"`
	// NotFoundGrace is how long a VIP that does not exist, and that no
	// proxy holds, stays watched.
	NotFoundGrace registry.Duration `json:"not_found_grace"`
	// MaxNotFound bounds the VIPs that do not exist watched at once (each
	// so that the proxies holding it are told if it appears). Past it the
	// ones no proxy holds are forgotten first; when all are held, a new
	// name is answered "not found" without being watched.
	MaxNotFound int `json:"max_not_found"`
}

// Defaults returns the configuration meshd runs with when given none.
func Defaults() Config {
	return Config{
		DataDir: "./data",
		Log:     Log{Level: "info", Format: "text"},
		XDS: XDS{
			Address:       "127.0.0.1:18000",
			AdmissionRate: server.DefaultAdmissionRate, AdmissionBurst: server.DefaultAdmissionBurst,
			MaxWaitingStreams:       server.DefaultMaxWaitingStreams,
			MaxStreamsPerPeer:       server.DefaultMaxStreamsPerPeer,
			MaxStreamsPerConnection: server.DefaultMaxStreamsPerConnection,
			MaxUnknownNames:         server.DefaultMaxUnknownNames,
			ODCDSTimeout:            registry.Duration(translate.DefaultODCDSTimeout),
			AllowUnauthenticated:    true,
		},
		HTTP: HTTP{Address: "127.0.0.1:18080", AllowedHosts: []string{}, AllowUnauthenticated: true},
		TLS:  TLS{Names: []string{}},
		Registry: Registry{
			Type: "embedded",
			Embedded: Embedded{
				SweepInterval:                registry.Duration(embedded.DefaultSweepInterval),
				SelfPreservationShare:        registry.DefaultSelfPreservationShare,
				SelfPreservationMinInstances: registry.DefaultSelfPreservationMinInstances,
			},
			Consul: Consul{
				Address: consul.DefaultAddress, KVPrefix: consul.DefaultKVPrefix,
				StaleReads: true, WarningIsUp: true,
				WaitTime:                registry.Duration(consul.DefaultWaitTime),
				QueryTimeout:            registry.Duration(consul.DefaultQueryTimeout),
				DeregisterCriticalAfter: registry.Duration(consul.DefaultDeregisterCriticalAfter),
			},
		},
		Discovery: Discovery{
			Grace:         registry.Duration(discovery.DefaultGrace),
			NotFoundGrace: registry.Duration(discovery.DefaultNotFoundGrace),
			MaxNotFound:   discovery.DefaultMaxNotFound,
		},
		Secrets: DefaultSecrets(),
	}
}

// Load reads a YAML (or JSON) file over the defaults. Unknown fields are
// errors, so a typo does not silently fall back to a default.
func Load(path string) (Config, error) {
	cfg := Defaults()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := Decode(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Decode decodes YAML or JSON into cfg strictly: unknown fields and
// trailing documents are errors.
func Decode(b []byte, cfg *Config) error {
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	if string(bytes.TrimSpace(j)) == "null" { // empty file: defaults stand
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		// The REST API's explanation: the field's path, the fields allowed
		// there and the nearest, what a value should be; never Go's names.
		if e := api.Explain(j, cfg); e != nil {
			return fmt.Errorf("%s (see --print-config for every field)", e.Message)
		}
		return fmt.Errorf("%w (see --print-config for every field)", err)
	}
	return nil
}

// YAML renders the configuration as meshd reads it.
func (c Config) YAML() ([]byte, error) { return yaml.Marshal(c) }

// Validate checks every section; the error names the field.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: must not be empty"))
	}
	errs = append(errs, c.Log.validate(), c.XDS.validate(), c.HTTP.validate(), c.Registry.validate(), c.Discovery.validate(),
		c.Secrets.validate(), c.TLS.validate(), c.exposure())
	if c.TLS.Enabled && c.Secrets.Type == "vault" && c.Secrets.Vault.ServerRole == "" {
		errs = append(errs, errors.New("secrets.vault.server_role: tls.enabled needs the Vault PKI role that issues meshd's serving certificate (DNS and IP SANs of tls.names, URI SAN "+names.SPIFFE(names.ControlPlane)+")"))
	}
	if c.XDS.Address == c.HTTP.Address && !strings.HasSuffix(c.XDS.Address, ":0") {
		errs = append(errs, fmt.Errorf("http.address: %s is also xds.address; use two ports", c.HTTP.Address))
	}
	return errors.Join(errs...)
}

func (t TLS) validate() error {
	var errs []error
	for i, n := range t.Names {
		if net.ParseIP(n) == nil && names.ValidateHostname(n) != nil {
			errs = append(errs, fmt.Errorf("tls.names[%d]: %q is neither a DNS name nor an IP address; e.g. meshd.internal or 10.0.0.5", i, n))
		}
	}
	return errors.Join(errs...)
}

// exposure refuses what is insecure beyond loopback, unless
// insecure_on_purpose says it is meant: a listener without TLS, streams
// without a token, a REST API open to requests without one.
func (c Config) exposure() error {
	if c.InsecureOnPurpose {
		return nil
	}
	var errs []error
	fix := "or set insecure_on_purpose: true to accept that on purpose"
	for _, l := range []struct{ field, addr string }{{"xds.address", c.XDS.Address}, {"http.address", c.HTTP.Address}} {
		if Loopback(l.addr) {
			continue
		}
		if !c.TLS.Enabled {
			errs = append(errs, fmt.Errorf("%s: %s is reachable beyond this machine, and would serve tokens, private keys and the registry in clear; set tls.enabled: true (and tls.names), %s", l.field, l.addr, fix))
		}
	}
	if !Loopback(c.XDS.Address) && c.XDS.AllowUnauthenticated {
		errs = append(errs, fmt.Errorf("xds.allow_unauthenticated: streams without a token would be served beyond this machine (xds.address %s); set it to false and give sidecars tokens (meshctl token issue), %s", c.XDS.Address, fix))
	}
	if !Loopback(c.HTTP.Address) && c.HTTP.AllowUnauthenticated {
		errs = append(errs, fmt.Errorf("http.allow_unauthenticated: anyone reaching http.address %s could register instances of any VIP; set it to false and use tokens (meshctl token issue --role operator), %s", c.HTTP.Address, fix))
	}
	return errors.Join(errs...)
}

// suggest is "; did you mean X?" for the allowed value nearest a wrong
// one, or "" when none is near.
func suggest(value string, allowed ...string) string {
	if n := api.Nearest(value, allowed); n != "" {
		return "; did you mean " + n + "?"
	}
	return ""
}

// Loopback reports whether a listen address host:port binds loopback only.
// An empty host, 0.0.0.0 or :: bind every interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l Log) validate() error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not a level; use debug, info, warn or error%s", l.Level, suggest(l.Level, "debug", "info", "warn", "error"))
	}
	switch l.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not a format; use text or json%s", l.Format, suggest(l.Format, "text", "json"))
	}
	return nil
}

func (x XDS) validate() error {
	var errs []error
	add := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	errs = append(errs, validAddress("xds.address", x.Address))
	add(x.AdmissionRate <= 0, "xds.admission_rate: %v must be positive (streams per second)", x.AdmissionRate)
	add(x.AdmissionBurst < 1, "xds.admission_burst: %d must be at least 1", x.AdmissionBurst)
	add(x.MaxWaitingStreams < 1, "xds.max_waiting_streams: %d must be at least 1 (streams waiting for admission)", x.MaxWaitingStreams)
	add(x.MaxStreamsPerPeer < 1, "xds.max_streams_per_peer: %d must be at least 1 (streams one client address may have)", x.MaxStreamsPerPeer)
	add(x.MaxStreamsPerConnection < 1, "xds.max_streams_per_connection: %d must be at least 1 (a proxy needs one)", x.MaxStreamsPerConnection)
	add(x.MaxUnknownNames < 1, "xds.max_unknown_names: %d must be at least 1 (names that do not exist one stream may hold of a type)", x.MaxUnknownNames)
	lo := registry.Duration(translate.FetchTimeout + time.Second)
	add(x.ODCDSTimeout < lo || x.ODCDSTimeout > registry.Duration(time.Minute),
		"xds.odcds_timeout: %s is out of range; use %s to 1m (above the %s sidecars wait for secrets)",
		x.ODCDSTimeout.D(), lo.D(), translate.FetchTimeout)
	return errors.Join(errs...)
}

func (h HTTP) validate() error {
	errs := []error{validAddress("http.address", h.Address)}
	for i, host := range h.AllowedHosts {
		if host == "" || strings.ContainsAny(host, "/:@ ") && net.ParseIP(strings.Trim(host, "[]")) == nil {
			errs = append(errs, fmt.Errorf("http.allowed_hosts[%d]: %q is not a host name or address; e.g. meshd.internal", i, host))
		}
	}
	return errors.Join(errs...)
}

func (r Registry) validate() error {
	var errs []error
	add := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	add(r.Type != "embedded" && r.Type != "consul", "registry.type: %q is not supported; use embedded or consul%s", r.Type, suggest(r.Type, "embedded", "consul"))
	errs = append(errs, r.Consul.validate())
	e := r.Embedded
	add(e.SweepInterval < registry.Duration(10*time.Millisecond) || e.SweepInterval > registry.Duration(time.Minute),
		"registry.embedded.sweep_interval: %s is out of range; use 10ms to 1m", e.SweepInterval.D())
	add(e.SelfPreservationShare <= 0 || e.SelfPreservationShare > 1,
		"registry.embedded.self_preservation_share: %v must be a fraction in (0, 1], e.g. 0.15", e.SelfPreservationShare)
	add(e.SelfPreservationMinInstances < 1,
		"registry.embedded.self_preservation_min_instances: %d must be at least 1 (1: no minimum; default %d)",
		e.SelfPreservationMinInstances, registry.DefaultSelfPreservationMinInstances)
	return errors.Join(errs...)
}

func (c Consul) validate() error {
	var errs []error
	add := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if err := consul.CheckAddress(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("registry.consul.address: %w; e.g. 127.0.0.1:8500", err))
	}
	add(c.Token != "" && c.TokenFile != "", "registry.consul.token_file: set token or token_file, not both")
	add(strings.ContainsAny(c.Datacenter, "/?#& "), "registry.consul.datacenter: %q is not a datacenter name", c.Datacenter)
	p := c.KVPrefix
	add(p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, "?# "),
		"registry.consul.kv_prefix: %q must be a KV path without leading or trailing '/', e.g. xspace/vips", p)
	add(c.WaitTime < registry.Duration(time.Second) || c.WaitTime > registry.Duration(10*time.Minute),
		"registry.consul.wait_time: %s is out of range; use 1s to 10m (Consul's limit)", c.WaitTime.D())
	add(c.QueryTimeout < registry.Duration(100*time.Millisecond) || c.QueryTimeout > registry.Duration(time.Minute),
		"registry.consul.query_timeout: %s is out of range; use 100ms to 1m", c.QueryTimeout.D())
	add(c.DeregisterCriticalAfter < registry.Duration(time.Minute),
		"registry.consul.deregister_critical_after: %s is too short; Consul's minimum is 1m", c.DeregisterCriticalAfter.D())
	return errors.Join(errs...)
}

func (d Discovery) validate() error {
	var errs []error
	if d.Grace < 0 {
		errs = append(errs, fmt.Errorf("discovery.grace: %s must not be negative", d.Grace.D()))
	}
	if d.NotFoundGrace < 0 || d.NotFoundGrace > d.Grace {
		errs = append(errs, fmt.Errorf("discovery.not_found_grace: %s must be between 0 and discovery.grace (%s)", d.NotFoundGrace.D(), d.Grace.D()))
	}
	if d.MaxNotFound < 1 {
		errs = append(errs, fmt.Errorf("discovery.max_not_found: %d must be at least 1 (VIPs that do not exist watched at once)", d.MaxNotFound))
	}
	return errors.Join(errs...)
}

func validAddress(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port (%w); e.g. 127.0.0.1:18000", field, addr, err)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%s: host %q must be an IP address or localhost", field, host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s: port %q must be 0 to 65535", field, port)
	}
	return nil
}
