//go:build unix

package server_test

// The peers meshd is compared with (issue 15), each served from a child
// process like meshd's own (TestBenchServerProcess), from the same registry
// content, with the same gRPC server options:
//
//   - stock: go-control-plane's delta server over its LinearCaches (one for
//     clusters, one for endpoints) behind a MuxCache, preloaded with the
//     clusters and endpoints meshd would serve for every VIP, byte for byte
//     (built by the same translation from the same registry). A change is a
//     registry write, then the VIP's new ClusterLoadAssignment put in the
//     LinearCache: the same work meshd does, without discovery.
//   - floor: a bare grpc-go bidi stream answering each subscription with
//     response bytes marshalled beforehand, and pushing a change's bytes to
//     the streams that subscribed its name: what any xDS server must at
//     least do.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/registry/embedded"
	"github.com/prisma-systems/xspace-mesh/xds/server"
	"github.com/prisma-systems/xspace-mesh/xds/translate"
)

// peerEnv selects the peer a child process serves: meshd (the default),
// stock or floor.
const peerEnv = "XSPACE_BENCH_PEER"

// peerServer is a server other than meshd that a child process serves.
type peerServer interface {
	// change registers an instance and pushes its VIP's new endpoints.
	change(ctx context.Context, inst registry.Instance) error
}

// vipResources are the cluster and endpoints meshd serves for a VIP's
// plaintext cluster, translated from what the registry holds.
func vipResources(ctx context.Context, store *embedded.Store, vip string) (cluster, cla proto.Message, err error) {
	svc, err := store.Lookup(ctx, vip)
	if err != nil {
		return nil, nil, err
	}
	return translate.Cluster(svc.VIP), translate.ClusterLoadAssignment(svc), nil
}

// stockPeer is go-control-plane's own cache and server.
type stockPeer struct {
	store    *embedded.Store
	clusters *gcpcache.LinearCache
	eds      *gcpcache.LinearCache
}

func newStockPeer(ctx context.Context, store *embedded.Store, vips int, g *grpc.Server) (*stockPeer, error) {
	clusters, clas := map[string]types.Resource{}, map[string]types.Resource{}
	for v := range vips {
		c, cla, err := vipResources(ctx, store, benchVIP(v))
		if err != nil {
			return nil, err
		}
		name := names.Cluster(benchVIP(v), false)
		clusters[name], clas[name] = c.(types.Resource), cla.(types.Resource)
	}
	p := &stockPeer{
		store:    store,
		clusters: gcpcache.NewLinearCache(resource.ClusterType, gcpcache.WithInitialResources(clusters)),
		eds:      gcpcache.NewLinearCache(resource.EndpointType, gcpcache.WithInitialResources(clas)),
	}
	mux := &gcpcache.MuxCache{
		Classify:      func(r *gcpcache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *gcpcache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]gcpcache.Cache{resource.ClusterType: p.clusters, resource.EndpointType: p.eds},
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, mux, nil))
	return p, nil
}

func (p *stockPeer) change(ctx context.Context, inst registry.Instance) error {
	if _, err := p.store.Register(ctx, inst); err != nil {
		return err
	}
	_, cla, err := vipResources(ctx, p.store, inst.VIP)
	if err != nil {
		return err
	}
	return p.eds.UpdateResource(names.Cluster(inst.VIP, false), cla.(types.Resource))
}

// floorPeer answers with bytes marshalled beforehand.
type floorPeer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	store *embedded.Store

	mu sync.Mutex
	// entries are each name's resource, as the bytes of one entry of a
	// DeltaDiscoveryResponse's resources field, by type URL and name.
	entries map[string]map[string][]byte
	// holders are the streams that subscribed an endpoints name.
	holders map[string]map[*floorStream]struct{}
	changes int // versions the changed resources
}

type floorStream struct {
	mu     sync.Mutex // serializes sends
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	nonce  int
}

func newFloorPeer(ctx context.Context, store *embedded.Store, vips int, g *grpc.Server) (*floorPeer, error) {
	p := &floorPeer{
		store:   store,
		entries: map[string]map[string][]byte{resource.ClusterType: {}, resource.EndpointType: {}},
		holders: map[string]map[*floorStream]struct{}{},
	}
	for v := range vips {
		c, cla, err := vipResources(ctx, store, benchVIP(v))
		if err != nil {
			return nil, err
		}
		name := names.Cluster(benchVIP(v), false)
		p.entries[resource.ClusterType][name] = resourceEntry(name, "1", c)
		p.entries[resource.EndpointType][name] = resourceEntry(name, "1", cla)
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, p)
	return p, nil
}

// resourceEntry is a named resource as one entry of the resources field
// (2) of a DeltaDiscoveryResponse, ready to be concatenated.
func resourceEntry(name, version string, msg proto.Message) []byte {
	a, err := anypb.New(msg)
	if err != nil {
		panic(err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.Resource{Name: name, Version: version, Resource: a})
	if err != nil {
		panic(err)
	}
	entry := protowire.AppendTag(nil, 2, protowire.BytesType)
	return protowire.AppendBytes(entry, b)
}

// rawResponse is a DeltaDiscoveryResponse already encoded; rawCodec sends
// it as is.
type rawResponse []byte

func (p *floorPeer) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	s := &floorStream{stream: stream}
	defer func() {
		p.mu.Lock()
		for _, h := range p.holders {
			delete(h, s)
		}
		p.mu.Unlock()
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if len(req.GetResourceNamesSubscribe()) == 0 {
			continue // an ACK
		}
		typeURL := req.GetTypeUrl()
		var resp []byte
		p.mu.Lock()
		for _, name := range req.GetResourceNamesSubscribe() {
			resp = append(resp, p.entries[typeURL][name]...)
			if typeURL == resource.EndpointType {
				if p.holders[name] == nil {
					p.holders[name] = map[*floorStream]struct{}{}
				}
				p.holders[name][s] = struct{}{}
			}
		}
		p.mu.Unlock()
		if err := s.send(typeURL, resp); err != nil {
			return err
		}
	}
}

// send sends resource entries with the type URL and a nonce.
func (s *floorStream) send(typeURL string, entries []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nonce++
	b := append([]byte(nil), entries...)
	b = protowire.AppendTag(b, 4, protowire.BytesType) // type_url
	b = protowire.AppendString(b, typeURL)
	b = protowire.AppendTag(b, 5, protowire.BytesType) // nonce
	b = protowire.AppendString(b, strconv.Itoa(s.nonce))
	return s.stream.SendMsg(rawResponse(b))
}

func (p *floorPeer) change(ctx context.Context, inst registry.Instance) error {
	if _, err := p.store.Register(ctx, inst); err != nil {
		return err
	}
	_, cla, err := vipResources(ctx, p.store, inst.VIP)
	if err != nil {
		return err
	}
	name := names.Cluster(inst.VIP, false)
	p.mu.Lock()
	p.changes++
	entry := resourceEntry(name, strconv.Itoa(p.changes+1), cla)
	p.entries[resource.EndpointType][name] = entry
	holders := make([]*floorStream, 0, len(p.holders[name]))
	for s := range p.holders[name] {
		holders = append(holders, s)
	}
	p.mu.Unlock()
	for _, s := range holders {
		_ = s.send(resource.EndpointType, entry)
	}
	return nil
}

// rawCodec is gRPC's proto codec, except that it sends a rawResponse's
// bytes as they are.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if raw, ok := v.(rawResponse); ok {
		return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// servePeer serves a peer (stock or floor) from a registry of vips VIPs on
// a new loopback port, and returns its address and change function.
func servePeer(t *testing.T, kind string, vips int) (string, func(context.Context, registry.Instance) error) {
	t.Helper()
	ctx := t.Context()
	store, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	registerVIPs(t, &mesh{store: store}, vips, 3)
	opts := server.GRPCOptions(0)
	if kind == "floor" {
		opts = append(opts, grpc.ForceServerCodecV2(rawCodec{encoding.GetCodecV2("proto")}))
	}
	g := grpc.NewServer(opts...)
	var p peerServer
	switch kind {
	case "stock":
		p, err = newStockPeer(ctx, store, vips, g)
	case "floor":
		p, err = newFloorPeer(ctx, store, vips, g)
	default:
		err = fmt.Errorf("%s=%q: want meshd, stock or floor", peerEnv, kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String(), p.change
}
