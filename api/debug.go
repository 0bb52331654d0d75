package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Paths of meshd's operational endpoints that meshctl reads besides the
// API (see also ProxiesPath and VIPStatsPath).
const (
	InfoPath    = "/debug/info"
	ReadyPath   = "/readyz"
	HealthPath  = "/healthz"
	SecretsPath = "/debug/secrets"
)

// ServerInfo is the body of GET /debug/info: which build of meshd answers,
// and where it serves xDS, so that a client pointed at its HTTP address
// finds the rest.
type ServerInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"go_version"`
	// XDSAddress is the address meshd's xDS listener is bound to, as
	// host:port; a host of 0.0.0.0 or :: means every interface.
	XDSAddress string `json:"xds_address"`
}

// Readiness is the body of GET /readyz: whether meshd is ready, and each
// check's result with its detail as the check wrote it.
type Readiness struct {
	Ready  bool                      `json:"ready"`
	Checks map[string]ReadinessCheck `json:"checks"`
}

// ReadinessCheck is one check of GET /readyz.
type ReadinessCheck struct {
	OK     bool            `json:"ok"`
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Certificate is one identity certificate meshd holds, as GET
// /debug/secrets lists it (never a key).
type Certificate struct {
	Service     string    `json:"service"`
	Serial      string    `json:"serial,omitempty"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	Refs        int       `json:"refs"`
	NearExpiry  bool      `json:"near_expiry,omitempty"`
	Failures    int       `json:"failures,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
}

// Info returns which build of meshd answers and where it serves xDS.
func (c *Client) Info(ctx context.Context) (ServerInfo, error) {
	var i ServerInfo
	_, err := c.do(ctx, http.MethodGet, InfoPath, "", nil, &i)
	return i, err
}

// Health asks GET /healthz whether the process is up.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, HealthPath, "", nil, nil)
	return err
}

// Readiness returns meshd's readiness and its checks. A meshd that is not
// ready answers 503 with the same body; that is returned with a nil error.
func (c *Client) Readiness(ctx context.Context) (Readiness, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+ReadyPath, nil)
	if err != nil {
		return Readiness{}, fmt.Errorf("api: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return Readiness{}, fmt.Errorf("api: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return Readiness{}, fmt.Errorf("api: GET %s: read response: %w", ReadyPath, err)
	}
	var r Readiness
	if (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable) &&
		json.Unmarshal(b, &r) == nil && r.Checks != nil {
		return r, nil
	}
	return Readiness{}, responseError(resp, b)
}

// Certificates lists the identity certificates meshd holds.
func (c *Client) Certificates(ctx context.Context) ([]Certificate, error) {
	var l struct {
		Certificates []Certificate `json:"certificates"`
	}
	_, err := c.do(ctx, http.MethodGet, SecretsPath, "", nil, &l)
	return l.Certificates, err
}
