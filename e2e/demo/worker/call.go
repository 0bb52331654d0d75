package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBody is how much of an upstream answer a call keeps.
const maxBody = 64 << 10

// result is the outcome of one call through the sidecar.
type result struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	// LatencyMS is the time from sending the request to having read the
	// answer (at most maxBody of it), in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
}

// caller makes calls through the sidecar's outbound listener.
type caller struct {
	proxy  string
	client *http.Client
}

// newCaller returns a caller of cfg.Proxy. It ignores proxy settings from
// the environment (the sidecar is the proxy) and does not follow redirects,
// which could lead around the sidecar: a 3xx is relayed as it is.
func newCaller(cfg config) *caller {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &caller{
		proxy: cfg.Proxy,
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// call sends GET http://<proxy><path> with Host: authority, which
// validTarget accepted. The latency is set even when the call fails.
func (c *caller) call(ctx context.Context, authority, path string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.proxy+path, nil)
	if err != nil {
		return result{}, fmt.Errorf("call %s%s: %w", authority, path, err)
	}
	req.Host = authority
	start := time.Now()
	res, err := c.send(req)
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return res, fmt.Errorf("call %s%s through %s: %w", authority, path, c.proxy, err)
	}
	return res, nil
}

func (c *caller) send(req *http.Request) (result, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return result{}, fmt.Errorf("read answer (status %d): %w", resp.StatusCode, err)
	}
	return result{Status: resp.StatusCode, Body: string(b)}, nil
}

// validTarget checks what a call asks for: an authority (host[:port]) and
// a path, with an optional query, starting with "/".
func validTarget(authority, path string) error {
	if err := validAuthority(authority); err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("path %q must start with /", path)
	}
	if _, err := url.ParseRequestURI(path); err != nil {
		return fmt.Errorf("path %q: %w", path, err)
	}
	return nil
}

// validAuthority checks a Host header value: a host with an optional port,
// nothing else.
func validAuthority(a string) error {
	if a == "" {
		return errors.New("empty; name a VIP such as api.svip")
	}
	u, err := url.Parse("http://" + a)
	if err != nil || u.Host != a || u.User != nil || strings.ContainsAny(a, " /?#@\\") {
		return fmt.Errorf("%q is not a host[:port]", a)
	}
	return nil
}

// callEvery calls the --target every --every until ctx ends, and logs each
// outcome.
func callEvery(ctx context.Context, c *caller, cfg config, logger *slog.Logger) {
	logger = logger.With("authority", cfg.TargetAuthority, "path", cfg.TargetPath)
	logger.Info("calling on a schedule", "every", cfg.Every)
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := c.call(ctx, cfg.TargetAuthority, cfg.TargetPath)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			logger.Warn("call failed", "error", err, "latency_ms", res.LatencyMS)
		default:
			logger.Info("call", "status", res.Status, "latency_ms", res.LatencyMS, "body", excerpt(res.Body))
		}
	}
}

// excerpt is the start of a body, for a log line.
func excerpt(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
