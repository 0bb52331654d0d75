package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/prisma-systems/xspace-mesh/e2e/demo/internal/demo"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

const usage = `demo-api is a demo XSPACE HTTP service: one instance of an API VIP, reached
through its Envoy sidecar. With --meshd it registers itself with the control
plane, heartbeats, registers again if meshd forgets it, and deregisters on
SIGINT or SIGTERM.

Endpoints:
  GET  /healthz                  200 "ok"
  POST /admin/fail?on=true|false while on, every other request answers 503
  POST /admin/leave              stop heartbeating and deregister from meshd
  *    any other path            200 JSON {"instance","vip","caller","host","path"};
                                 caller is the URI SAN of x-forwarded-client-cert

Usage:
  demo-api [flags]

Flags:
`

// config is what the flags say.
type config struct {
	Listen     string
	Name       string
	VIP        string
	Meshd      string
	Address    string
	Port       uint
	SecurePort uint
	Zone       string
	TTL        time.Duration
	Heartbeat  time.Duration
	// CAFile and TokenFile are how it reaches a meshd with TLS and tokens.
	CAFile    string
	TokenFile string
}

// parseFlags parses args into a validated config. Usage and parse errors are
// written to out; -h gives flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("demo-api", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	host, hostErr := os.Hostname()
	var c config
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP listen `address` (host:port)")
	fs.StringVar(&c.Name, "name", host, "instance `id` in the registry and in answers")
	fs.StringVar(&c.VIP, "vip", "api", "`VIP` this instance belongs to")
	fs.StringVar(&c.Meshd, "meshd", "", "meshd's HTTP base `URL`, e.g. http://meshd:18080; empty: do not register")
	fs.StringVar(&c.Address, "address", "", "IP `address` to register (required with --meshd)")
	fs.UintVar(&c.Port, "port", 0, "`port` to register (default: the --listen port)")
	fs.UintVar(&c.SecurePort, "secure-port", 0, "mutual-TLS `port` served by the instance's Envoy sidecar, registered as secure_port; 0: none")
	fs.StringVar(&c.Zone, "zone", "", "`zone` to register (optional)")
	fs.DurationVar(&c.TTL, "ttl", 30*time.Second, "registration lease: meshd drops the instance after this long without a heartbeat (whole seconds)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 10*time.Second, "`interval` between heartbeats; must be less than --ttl")
	fs.StringVar(&c.CAFile, "ca-file", "", "PEM `file` of the CA that signs meshd's certificate, for an https --meshd; empty: the system's roots")
	fs.StringVar(&c.TokenFile, "token-file", "", "`file` holding the service's token (meshctl token issue --service VIP), for a meshd that requires one")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; demo-api takes only flags (see --help)", fs.Arg(0))
	}
	if c.Name == "" && hostErr != nil {
		return c, fmt.Errorf("--name is required: the host name is unknown: %w", hostErr)
	}
	return c, c.complete()
}

// complete fills the defaults that depend on other flags, then validates.
func (c *config) complete() error {
	listenPort, err := demo.Port(c.Listen, "127.0.0.1:8080")
	if err != nil {
		return fmt.Errorf("--listen %w", err)
	}
	if c.Port == 0 {
		c.Port = uint(listenPort)
	}
	return c.validate()
}

func (c *config) validate() error {
	if err := registry.ValidateInstanceID(c.Name); err != nil {
		return fmt.Errorf("--name: %s", validationMessage(err))
	}
	if err := names.ValidateVIP(c.VIP); err != nil {
		return fmt.Errorf("--vip: %w", err)
	}
	if c.Port > 65535 {
		return fmt.Errorf("--port: %d is not a port; use 1 to 65535", c.Port)
	}
	if c.SecurePort > 65535 {
		return fmt.Errorf("--secure-port: %d is not a port; use 1 to 65535, or 0 for none", c.SecurePort)
	}
	if c.Address != "" {
		if _, err := netip.ParseAddr(c.Address); err != nil {
			return fmt.Errorf("--address: %q is not an IP address", c.Address)
		}
	}
	if c.TTL < registry.MinTTL.D() || c.TTL > registry.MaxTTL.D() || c.TTL%time.Second != 0 {
		return fmt.Errorf("--ttl: %s is not a lease meshd accepts; use whole seconds from %s to %s",
			c.TTL, registry.MinTTL.D(), registry.MaxTTL.D())
	}
	if c.Heartbeat <= 0 || c.Heartbeat >= c.TTL {
		return fmt.Errorf("--heartbeat: %s must be more than 0 and less than --ttl (%s)", c.Heartbeat, c.TTL)
	}
	if c.Meshd == "" {
		if c.CAFile != "" || c.TokenFile != "" {
			return errors.New("--ca-file and --token-file are for reaching meshd; give --meshd too")
		}
		return nil
	}
	u, err := url.Parse(c.Meshd)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--meshd: %q is not an http(s) base URL; use one such as http://meshd:18080", c.Meshd)
	}
	if c.Address == "" {
		return errors.New("--address is required with --meshd: it is the IP address meshd gives to Envoys")
	}
	if c.Port == 0 {
		return errors.New("--port is required with --meshd when --listen uses port 0")
	}
	return nil
}

// validationMessage is a registry validation error without its field name,
// which names the wire field rather than the flag.
func validationMessage(err error) string {
	if ve, ok := errors.AsType[*registry.ValidationError](err); ok {
		return ve.Message
	}
	return err.Error()
}
