package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prisma-systems/xspace-mesh/e2e/demo/internal/demo"
)

const usage = `demo-worker is a demo XSPACE worker: it calls other VIPs through its Envoy
sidecar's outbound listener (--proxy), with the Host header naming the VIP
(api.vip for plaintext, api.svip for mutual TLS).

Endpoints:
  GET /call?authority=api.svip&path=/hello
        calls http://<proxy><path> with Host: <authority>; answers 200
        {"status":<upstream status>,"body":"<first 64 KiB>","latency_ms":<ms>},
        502 {"error":"...","latency_ms":<ms>} when the call fails, and
        400 {"error":"..."} for bad parameters
  GET /healthz
        200 "ok"

With --every, it also calls --target on that interval and logs the outcome.

Usage:
  demo-worker [flags]

Flags:
`

// config is what the flags say.
type config struct {
	Listen  string
	Proxy   string
	Name    string
	Timeout time.Duration
	Every   time.Duration
	Target  string
	// TargetAuthority and TargetPath are Target split.
	TargetAuthority string
	TargetPath      string
}

// parseFlags parses args into a validated config. Usage and parse errors are
// written to out; -h gives flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("demo-worker", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	host, hostErr := os.Hostname()
	var c config
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8090", "HTTP listen `address` (host:port)")
	fs.StringVar(&c.Proxy, "proxy", "127.0.0.1:15001", "`address` (host:port) of the sidecar's outbound listener")
	fs.StringVar(&c.Name, "name", host, "worker `name`, for the logs")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "timeout of each call, through reading the answer")
	fs.DurationVar(&c.Every, "every", 0, "call --target at this `interval` and log the outcome; 0: off")
	fs.StringVar(&c.Target, "target", "api.svip/hello", "authority and path the --every loop calls, as `authority/path`")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; demo-worker takes only flags (see --help)", fs.Arg(0))
	}
	if c.Name == "" && hostErr != nil {
		return c, fmt.Errorf("--name is required: the host name is unknown: %w", hostErr)
	}
	return c, c.complete()
}

// complete splits --target, then validates.
func (c *config) complete() error {
	if _, err := demo.Port(c.Listen, "127.0.0.1:8090"); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if _, err := demo.Port(c.Proxy, "127.0.0.1:15001"); err != nil {
		return fmt.Errorf("--proxy: %w", err)
	}
	if c.Name == "" {
		return errors.New("--name must not be empty")
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout: %s must be more than 0", c.Timeout)
	}
	if c.Every < 0 {
		return fmt.Errorf("--every: %s must not be negative; use 0 to turn the loop off", c.Every)
	}
	authority, path, _ := strings.Cut(c.Target, "/")
	c.TargetAuthority, c.TargetPath = authority, "/"+path
	if err := validTarget(c.TargetAuthority, c.TargetPath); err != nil {
		return fmt.Errorf("--target %q: %w; use authority/path such as api.svip/hello", c.Target, err)
	}
	return nil
}
