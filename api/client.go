package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// maxResponseBytes bounds what the client reads of one response; a list of
// every VIP of a large registry fits many times over.
const maxResponseBytes = 256 << 20

// Client calls the REST API and the debug endpoints of a control plane.
// Every error the server answered with is returned as an *Error.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the server at baseURL
// ("http://127.0.0.1:18080"). A nil hc means http.DefaultClient.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// PutVIP creates or replaces a VIP's policy and returns the policy in force
// and whether the VIP was created.
func (c *Client) PutVIP(ctx context.Context, v registry.VIP) (registry.VIP, bool, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return registry.VIP{}, false, fmt.Errorf("api: encode VIP %q: %w", v.Name, err)
	}
	return c.ApplyVIP(ctx, v.Name, "application/json", body)
}

// ApplyVIP sends a VIP document as it is, JSON or YAML (contentType says
// which), so that the server alone decides what is valid. It returns the
// policy in force and whether the VIP was created.
func (c *Client) ApplyVIP(ctx context.Context, name, contentType string, doc []byte) (registry.VIP, bool, error) {
	var v registry.VIP
	status, err := c.do(ctx, http.MethodPut, vipPath(name), contentType, doc, &v)
	return v, status == http.StatusCreated, err
}

// GetVIP returns a VIP's policy.
func (c *Client) GetVIP(ctx context.Context, name string) (registry.VIP, error) {
	var v registry.VIP
	_, err := c.do(ctx, http.MethodGet, vipPath(name), "", nil, &v)
	return v, err
}

// ListVIPs returns every VIP, sorted by name.
func (c *Client) ListVIPs(ctx context.Context) ([]registry.VIP, error) {
	var l vipList
	_, err := c.do(ctx, http.MethodGet, "/v1/vips", "", nil, &l)
	return l.VIPs, err
}

// DeleteVIP deletes a VIP that has no instances left.
func (c *Client) DeleteVIP(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, vipPath(name), "", nil, nil)
	return err
}

// Register registers (or replaces) instance id of vip.
func (c *Client) Register(ctx context.Context, vip, id string, reg Registration) (Instance, error) {
	var inst Instance
	err := c.putJSON(ctx, instancePath(vip, id), reg, &inst)
	return inst, err
}

// Heartbeat renews an instance's lease and returns when the server renewed
// it. An *Error with Status 404 means the instance must register again.
func (c *Client) Heartbeat(ctx context.Context, vip, id string) (time.Time, error) {
	var r renewal
	_, err := c.do(ctx, http.MethodPut, instancePath(vip, id)+"/heartbeat", "", nil, &r)
	return r.RenewedAt, err
}

// SetStatus changes an instance's status.
func (c *Client) SetStatus(ctx context.Context, vip, id string, s registry.Status) (Instance, error) {
	var inst Instance
	err := c.putJSON(ctx, instancePath(vip, id)+"/status", statusChange{Status: s}, &inst)
	return inst, err
}

// Deregister removes an instance.
func (c *Client) Deregister(ctx context.Context, vip, id string) error {
	_, err := c.do(ctx, http.MethodDelete, instancePath(vip, id), "", nil, nil)
	return err
}

// Instances lists a VIP's instances, sorted by id.
func (c *Client) Instances(ctx context.Context, vip string) ([]Instance, error) {
	var l instanceList
	_, err := c.do(ctx, http.MethodGet, vipPath(vip)+"/instances", "", nil, &l)
	return l.Instances, err
}

// Proxies lists the proxies connected to the control plane.
func (c *Client) Proxies(ctx context.Context) ([]ProxyInfo, error) {
	var l ProxyList
	_, err := c.do(ctx, http.MethodGet, ProxiesPath, "", nil, &l)
	return l.Proxies, err
}

// VIPStats returns the control plane's view of each VIP it knows.
func (c *Client) VIPStats(ctx context.Context) ([]VIPStat, error) {
	var l VIPStatList
	_, err := c.do(ctx, http.MethodGet, VIPStatsPath, "", nil, &l)
	return l.VIPs, err
}

func vipPath(vip string) string { return "/v1/vips/" + url.PathEscape(vip) }

func instancePath(vip, id string) string { return vipPath(vip) + "/instances/" + url.PathEscape(id) }

func (c *Client) putJSON(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("api: encode request to %s: %w", path, err)
	}
	_, err = c.do(ctx, http.MethodPut, path, "application/json", body, out)
	return err
}

// do sends one request and decodes a successful answer into out (when not
// nil). It returns the status code and, for any answer of 400 or more, an
// *Error holding what the server wrote.
func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, fmt.Errorf("api: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("api: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("api: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, responseError(resp, b)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("api: %s %s: decode response: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// responseError returns the server's error body as an *Error, or, when the
// answer is not one (a proxy in between, a server of another kind), an
// *Error quoting the start of what came back.
func responseError(resp *http.Response, b []byte) *Error {
	var body errorBody
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Code != "" {
		body.Error.Status = resp.StatusCode
		return body.Error
	}
	text := strings.TrimSpace(string(b))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	msg := "server answered " + resp.Status
	if text != "" {
		msg += ": " + text
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}
