// Package sidecar serves what an Envoy sidecar needs besides the VIPs it
// asks for on demand: its outbound and inbound listeners, derived from the
// ports its bootstrap wrote into its node metadata (meshctl bootstrap).
// Envoy subscribes to listeners by wildcard; Listeners tells the cache what
// the wildcard means for a node, and Sidecars.Prepare makes those resources
// ready before the node's first request is answered. The cluster of the
// sidecar's own application is in its bootstrap, so that on-demand CDS is
// the only cluster subscription on its stream.
package sidecar

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/xds/cache"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// Ports are a sidecar's ports, from its node metadata. A node without an
// outbound port is not a sidecar (a proxyless gRPC client, a probe).
type Ports struct {
	// Outbound is the port of the outbound listener on 127.0.0.1.
	Outbound uint32
	// Inbound is the mutual-TLS port other sidecars call (the instance's
	// secure port); 0 means the sidecar takes no inbound traffic.
	Inbound uint32
	// App is the application's own port on 127.0.0.1, where inbound
	// requests go; required with Inbound.
	App uint32
}

// FromNode reads a node's ports. A malformed value is an error naming the
// metadata key; a node with none of the keys has zero Ports. An inbound
// port needs a stream authenticated as the node's service (the server
// records it in the node's metadata, names.NodeServiceKey).
func FromNode(node *corev3.Node) (Ports, error) {
	fields := node.GetMetadata().GetFields()
	var p Ports
	for _, f := range []struct {
		key string
		dst *uint32
	}{
		{names.NodeOutboundPortKey, &p.Outbound},
		{names.NodeInboundPortKey, &p.Inbound},
		{names.NodeAppPortKey, &p.App},
	} {
		v, ok := fields[f.key]
		if !ok {
			continue
		}
		port, err := portValue(v)
		if err != nil {
			return Ports{}, fmt.Errorf("node metadata %s: %w", f.key, err)
		}
		*f.dst = port
	}
	if err := names.SidecarPorts(p).Check(); err != nil {
		return Ports{}, fmt.Errorf("node metadata %s, %s, %s: %w (regenerate the bootstrap with meshctl bootstrap)",
			names.NodeOutboundPortKey, names.NodeInboundPortKey, names.NodeAppPortKey, err)
	}
	if p.Inbound != 0 && fields[names.NodeServiceKey].GetStringValue() == "" {
		// Without a token the stream gets no identity, and a listener
		// waiting for its certificate would never start.
		return Ports{}, fmt.Errorf("node metadata %s needs an authenticated stream: the inbound listener serves the service's certificate; give the sidecar a token (meshctl bootstrap --token-file)", names.NodeInboundPortKey)
	}
	return p, nil
}

// portValue accepts a TCP port as a JSON number or a decimal string.
func portValue(v *structpb.Value) (uint32, error) {
	var n float64
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		n = k.NumberValue
	case *structpb.Value_StringValue:
		i, err := strconv.ParseUint(k.StringValue, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is not a port number", k.StringValue)
		}
		n = float64(i)
	default:
		return 0, fmt.Errorf("want a port number, got %v", v.AsInterface())
	}
	if n != math.Trunc(n) || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%v is not a port between 1 and 65535", n)
	}
	return uint32(n), nil
}

// Sidecar reports whether the node is an Envoy sidecar.
func (p Ports) Sidecar() bool { return p.Outbound != 0 }

// items are the listeners of a sidecar of service. The outbound listener
// is the same for every service; the inbound one names the service's
// inbound route, so it is published in the service's scope (the cache
// scopes listeners by authenticated service, see controlplane.NewCache),
// under the name it has always had: a sidecar upgrading its meshd sees its
// listener updated in place.
func (p Ports) items(odcdsTimeout time.Duration, service string) []cache.Item {
	if !p.Sidecar() {
		return nil
	}
	out := translate.OutboundListener(p.Outbound, odcdsTimeout)
	items := []cache.Item{{TypeURL: resource.ListenerType, Name: out.GetName(), Msg: out}}
	if p.Inbound != 0 {
		in := translate.InboundListener(p.Inbound, p.App, service)
		items = append(items, cache.Item{TypeURL: resource.ListenerType, Name: in.GetName(), Msg: in, Scope: service})
	}
	return items
}

// Listeners names the listeners a node's wildcard listener subscription
// means, without building them (the cache asks on every response to the
// node); for cache.Wildcard.
func Listeners(node *corev3.Node) []string {
	p, err := FromNode(node)
	switch {
	case err != nil || !p.Sidecar():
		return nil // a stream with bad metadata is refused (Prepare)
	case p.Inbound != 0:
		return []string{names.OutboundListener(p.Outbound), names.InboundListener(p.Inbound, p.App)}
	}
	return []string{names.OutboundListener(p.Outbound)}
}

// Publisher is where sidecar resources go: the xDS cache.
type Publisher interface {
	Update(items ...cache.Item) error
}

// MaxLayouts bounds the distinct port layouts whose resources are kept. A
// fleet has a handful; a client claiming ever new ports is refused beyond
// this, rather than growing the cache.
const MaxLayouts = 1024

// Sidecars makes each sidecar's resources ready in the cache. They depend
// only on the ports and, for an inbound listener, the service, so each set
// is built once and kept.
type Sidecars struct {
	pub          Publisher
	odcdsTimeout time.Duration
	mu           sync.Mutex
	layouts      map[Ports]bool
	done         map[published]bool
}

// published is a set of sidecar resources in the cache. Its service is
// the authenticated one, and only for a sidecar with an inbound port: the
// services are as many as the tokens an operator issued.
type published struct {
	ports   Ports
	service string
}

// New returns Sidecars publishing into pub, whose outbound listeners hold
// a request for a cluster the sidecar lacks at most odcdsTimeout (0 takes
// translate.DefaultODCDSTimeout).
func New(pub Publisher, odcdsTimeout time.Duration) *Sidecars {
	if odcdsTimeout <= 0 {
		odcdsTimeout = translate.DefaultODCDSTimeout
	}
	return &Sidecars{pub: pub, odcdsTimeout: odcdsTimeout, layouts: make(map[Ports]bool), done: make(map[published]bool)}
}

// Prepare checks a node's sidecar metadata and publishes its resources if
// they are not yet published. An error says what is wrong with the
// metadata; the stream should be refused with it.
func (s *Sidecars) Prepare(node *corev3.Node) error {
	p, err := FromNode(node)
	if err != nil || !p.Sidecar() {
		return err
	}
	key := published{ports: p}
	if p.Inbound != 0 {
		key.service = node.GetMetadata().GetFields()[names.NodeServiceKey].GetStringValue()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[key] {
		return nil
	}
	if !s.layouts[p] && len(s.layouts) >= MaxLayouts {
		return fmt.Errorf("sidecar ports %+v: meshd already serves %d distinct port layouts, its limit; use the fleet's usual ports", p, MaxLayouts)
	}
	// One Update per item: their versions come from their own content
	// only, so layouts that share a listener or cluster share its version.
	for _, it := range p.items(s.odcdsTimeout, key.service) {
		if v, ok := it.Msg.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return fmt.Errorf("sidecar %s: %w", it.Name, err)
			}
		}
		if err := s.pub.Update(it); err != nil {
			return fmt.Errorf("sidecar %s: %w", it.Name, err)
		}
	}
	s.layouts[p], s.done[key] = true, true
	return nil
}
