// Package probe asks an xDS server for one cluster the way an Envoy sidecar
// does with on-demand CDS over delta ADS: subscribe to the Cluster, then to
// its ClusterLoadAssignment. meshctl resolve and the tests use it to see
// what a proxy would see.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ErrNotFound is returned (wrapped) when the server answers that the
// cluster does not exist.
var ErrNotFound = errors.New("cluster does not exist")

// Result is what a sidecar would hold after resolving a cluster.
type Result struct {
	Cluster   *clusterv3.Cluster
	Endpoints *endpointv3.ClusterLoadAssignment
	// ClusterAfter and EndpointsAfter are the times from the subscription
	// to each answer.
	ClusterAfter, EndpointsAfter time.Duration
}

// Resolve subscribes to cluster over a new delta ADS stream on conn and
// returns the Cluster and its endpoints, or ErrNotFound.
func Resolve(ctx context.Context, conn grpc.ClientConnInterface, node *corev3.Node, cluster string) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("probe: open stream: %w", err)
	}
	var res Result
	start := time.Now()
	res.Cluster = &clusterv3.Cluster{}
	if err := fetch(stream, node, resource.ClusterType, cluster, res.Cluster); err != nil {
		return Result{}, err
	}
	res.ClusterAfter = time.Since(start)
	res.Endpoints = &endpointv3.ClusterLoadAssignment{}
	name := res.Cluster.GetEdsClusterConfig().GetServiceName()
	if name == "" {
		name = cluster
	}
	if err := fetch(stream, nil, resource.EndpointType, name, res.Endpoints); err != nil {
		return Result{}, err
	}
	res.EndpointsAfter = time.Since(start)
	return res, nil
}

// fetch subscribes to one resource and decodes the answer into out.
func fetch(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, node *corev3.Node, typeURL, name string, out proto.Message) error {
	err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: []string{name}})
	if errors.Is(err, io.EOF) { // the server ended the stream: Recv says why (grpc-go's Send contract)
		_, err = stream.Recv()
	}
	if err != nil {
		return fmt.Errorf("probe: subscribe to %s: %w", name, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("probe: waiting for %s: %w", name, err)
		}
		if resp.GetTypeUrl() != typeURL {
			continue
		}
		if slices.Contains(resp.GetRemovedResources(), name) {
			return fmt.Errorf("probe: %s: %w", name, ErrNotFound)
		}
		for _, r := range resp.GetResources() {
			if r.GetName() == name {
				if err := r.GetResource().UnmarshalTo(out); err != nil {
					return fmt.Errorf("probe: decode %s: %w", name, err)
				}
				return stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: resp.GetNonce()})
			}
		}
	}
}
