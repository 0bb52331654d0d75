package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwWatch is one state-of-the-world stream waiting for a change.
type sotwWatch struct {
	req *gcpcache.Request
	sub gcpcache.Subscription
	ch  chan gcpcache.Response
}

// CreateWatch serves state-of-the-world streams (proxyless gRPC, Envoy
// without delta). A response carries every subscribed resource that exists;
// its version is a hash of the subscribed names and their resource versions,
// so subscribing to a name that does not exist still changes the version
// and is answered. A NACK is not answered with the same content again; the
// stream waits for a change.
//
// State of the world has no way to say "this name does not exist" about a
// name the client never received. For full-state types (listeners,
// clusters) absence from a response means "deleted" only for a resource
// the client already holds: grpc-go ("its absence from the response does
// not necessarily indicate that the resource does not exist ... we rely on
// the request timeout instead", internal/xds/clients/xdsclient/authority.go)
// and grpc-js-xds (xds-client.ts: resources with no cached value "are
// handled by the resource timer") both ignore a name they never had, and
// give up on it only after their 15-second does-not-exist timer (gRFC A57),
// or, in grpc-js, at the call's deadline. So that proxyless clients fail
// fast, discovery answers a VIP's listener name with a real listener whose
// route has no routes while the VIP is not served to them.
func (c *Cache) CreateWatch(req *gcpcache.Request, sub gcpcache.Subscription, ch chan gcpcache.Response) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, served := c.served(req.GetTypeUrl())
	if req.GetErrorDetail() == nil {
		if resp := sotwResponse(ts, req, sub); resp != nil {
			ch <- resp
			return func() {}, nil
		}
	}
	if !served {
		return func() {}, nil
	}
	w := &sotwWatch{req: req, sub: sub, ch: ch}
	index(&ts.sotw, ts, req.GetNode(), sub, w)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		unindex(&ts.sotw, ts, req.GetNode(), sub, w)
	}, nil
}

// sotwResponse returns the full response for a subscription, or nil when
// the client already has exactly this version. Called with c.mu held.
func sotwResponse(ts *typeState, req *gcpcache.Request, sub gcpcache.Subscription) *sotwResp {
	var names []string
	forEachName(sub, ts.implied(req.GetNode(), sub), func(name string, _ bool) { names = append(names, name) })
	slices.Sort(names)
	h := sha256.New()
	returned := make(map[string]string, len(names))
	resources := make([]*anypb.Any, 0, len(names))
	for _, name := range names {
		version := absent
		if e := ts.lookup(req.GetNode(), name); e != nil && !e.tombstone() {
			version = e.version
			resources = append(resources, e.any)
			returned[name] = e.version
		}
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write([]byte(version))
		h.Write([]byte{0})
	}
	version := hex.EncodeToString(h.Sum(nil)[:8])
	if version == req.GetVersionInfo() {
		return nil
	}
	return &sotwResp{req: req, version: version, resources: resources, returned: returned}
}

// fetchSubscription is the subscription of a one-off REST request.
type fetchSubscription []string

func (f fetchSubscription) ReturnedResources() map[string]string { return nil }
func (f fetchSubscription) IsWildcard() bool                     { return false }
func (f fetchSubscription) SubscribedResources() map[string]struct{} {
	m := make(map[string]struct{}, len(f))
	for _, n := range f {
		m[n] = struct{}{}
	}
	return m
}

// sotwResp is a cache.Response built from pre-encoded resources.
type sotwResp struct {
	req       *gcpcache.Request
	version   string
	resources []*anypb.Any
	returned  map[string]string
}

var _ gcpcache.Response = (*sotwResp)(nil)

func (r *sotwResp) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: r.version,
		TypeUrl:     r.req.GetTypeUrl(),
		Resources:   r.resources,
	}, nil
}

func (r *sotwResp) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }
func (r *sotwResp) GetVersion() (string, error)               { return r.version, nil }
func (r *sotwResp) GetResponseVersion() string                { return r.version }
func (r *sotwResp) GetReturnedResources() map[string]string   { return r.returned }
func (r *sotwResp) GetContext() context.Context               { return context.Background() }
