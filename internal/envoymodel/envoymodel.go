// Package envoymodel is a model of an Envoy sidecar's delta ADS client, for
// tests that drive meshd the way a real sidecar would. It is not Envoy, and
// no Envoy runs here: it follows, rule by rule, what Envoy's own source does
// (releases 1.36 to 1.39, read from envoyproxy/envoy; each rule names the
// file), for clusters asked for on demand, their endpoints and the secrets
// of mutual-TLS clusters. Listeners and routes are not modelled.
//
// The rules:
//
//  1. A lookup of a cluster name the sidecar never asked for sends one
//     DeltaDiscoveryRequest subscribing that name alone; a lookup of a name
//     already asked for sends nothing; no name is ever unsubscribed
//     (source/common/upstream/od_cds_api_impl.cc, XdstpOdCdsApiImpl::
//     addSubscription: "already subscribed to, skipping").
//  2. A lookup ends when the cluster is active (Found), when the server
//     says it does not exist (NotFound: onResourceRemoved), or after the
//     on-demand timeout (TimedOut) (cluster_manager_impl.cc,
//     requestOnDemandClusterDiscovery, notifyExpiredDiscovery). A name told
//     absent is looked up again only by waiting: the server must push it.
//  3. A received EDS cluster warms: its endpoints name is subscribed if not
//     already watched, and it becomes active when its ClusterLoadAssignment
//     arrives (source/extensions/clusters/eds/eds.cc, startPreInit). A name
//     already watched sends no new request, so an updated cluster waits for
//     the server to send its endpoints again (watch_map.cc findAdditions;
//     envoyproxy/envoy issue #47302).
//  4. After its endpoints, a cluster with a TLS transport socket subscribes
//     the SDS secrets it names that are not yet watched, and stays warming
//     until each has arrived or was removed (upstream_impl.cc: the secrets'
//     init targets are on the cluster's init manager; sds_api.cc).
//  5. While any cluster warms, cluster requests are held back: the ACK of a
//     cluster response and new cluster subscriptions wait until no cluster
//     warms, then go out, the new names in one request
//     (cluster_manager_impl.cc, updateClusterCounts; new_grpc_mux_impl.cc).
//  6. Every response is ACKed with its nonce.
//  7. The node is sent on a stream's first request only
//     (set_node_on_first_message_only, delta from 1.38; Options.NodeAlways
//     models 1.37 and older, which send it on every request:
//     delta_subscription_state.cc, getNextRequestAckless).
//  8. After a reconnect, one request per type subscribes every name ever
//     asked for, with the versions held as initial_resource_versions
//     (new_grpc_mux_impl.cc onStreamEstablished; delta_subscription_state.cc
//     getNextRequestAckless).
package envoymodel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Result is how a lookup ended.
type Result int

// Results of Lookup.
const (
	Found Result = iota
	NotFound
	TimedOut
)

func (r Result) String() string {
	return [...]string{"found", "not found", "timed out"}[r]
}

// Options describe the sidecar.
type Options struct {
	Node *corev3.Node
	// Token, if set, is sent as "authorization: Bearer <token>".
	Token string
	// ODCDSTimeout bounds a lookup (default 5s, Envoy's).
	ODCDSTimeout time.Duration
	// NodeAlways sends the node on every request (Envoy up to 1.37).
	NodeAlways bool
	// Restore are cluster names the sidecar asked for before it connected
	// (in an earlier life of its stream, with no version kept): its first
	// request subscribes them all at once, as after a reconnect (rule 8).
	Restore []string
}

// Sidecar is one modelled Envoy sidecar on one delta ADS stream at a time.
type Sidecar struct {
	opts Options

	mu      sync.Mutex
	stream  discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel  context.CancelFunc
	sent    bool // the node went out on this stream
	err     error
	state   *state
	changed chan struct{} // closed and replaced on every change
}

// New opens the sidecar's stream on conn. Close it when done.
func New(conn grpc.ClientConnInterface, opts Options) (*Sidecar, error) {
	if opts.ODCDSTimeout <= 0 {
		opts.ODCDSTimeout = 5 * time.Second
	}
	s := &Sidecar{opts: opts, state: newState(), changed: make(chan struct{})}
	for _, name := range opts.Restore {
		s.state.cluster(name).asked = true
		s.state.order = append(s.state.order, name)
	}
	if err := s.connect(conn); err != nil {
		return nil, err
	}
	return s, nil
}

// connect opens a stream and re-subscribes what the sidecar held (rule 8).
func (s *Sidecar) connect(conn grpc.ClientConnInterface) error {
	ctx, cancel := context.WithCancel(context.Background())
	if s.opts.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.opts.Token)
	}
	// Envoy's gRPC client takes responses of any size
	// (GrpcService.EnvoyGrpc.max_receive_message_length: 0, unlimited).
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		cancel()
		return fmt.Errorf("envoymodel: open stream: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream, s.cancel, s.sent, s.err = stream, cancel, false, nil
	s.state.reconnected()
	for _, typeURL := range []string{resource.ClusterType, resource.EndpointType, resource.SecretType} {
		names, versions := s.state.held(typeURL)
		if len(names) > 0 {
			s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: versions})
		}
	}
	go s.receive(stream)
	return nil
}

// Reconnect drops the stream and opens a new one on conn, as Envoy does
// when its control plane goes away.
func (s *Sidecar) Reconnect(conn grpc.ClientConnInterface) error {
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	return s.connect(conn)
}

// Close ends the stream.
func (s *Sidecar) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
}

// Err is the error that ended the current stream, if it ended.
func (s *Sidecar) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// sendLocked sends a request, with the node if rule 7 says so. Called with
// s.mu held, which also serializes sends on the stream.
func (s *Sidecar) sendLocked(req *discoveryv3.DeltaDiscoveryRequest) {
	if !s.sent || s.opts.NodeAlways {
		req.Node, s.sent = s.opts.Node, true
	}
	s.state.count(req)
	if err := s.stream.Send(req); err != nil && s.err == nil {
		s.err = err
	}
}

// Lookup is a request needing cluster: it returns once the cluster is
// active, known not to exist, or the on-demand timeout passed (rules 1, 2).
func (s *Sidecar) Lookup(ctx context.Context, cluster string) (Result, error) {
	s.mu.Lock()
	c := s.state.cluster(cluster)
	if c.active {
		s.mu.Unlock()
		return Found, nil
	}
	done := make(chan Result, 1)
	c.waiters = append(c.waiters, done)
	if !c.asked {
		c.asked = true
		s.state.order = append(s.state.order, cluster)
		s.subscribeLocked(resource.ClusterType, cluster)
	}
	s.mu.Unlock()
	timer := time.NewTimer(s.opts.ODCDSTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r, nil
	case <-timer.C:
		return TimedOut, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// subscribeLocked asks for a name, or queues it while cluster requests
// are held back (rule 5).
func (s *Sidecar) subscribeLocked(typeURL, name string) {
	if typeURL == resource.ClusterType && s.state.warming() {
		s.state.queuedCDS = append(s.state.queuedCDS, name)
		return
	}
	s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: []string{name}})
}

// receive handles the stream's responses until it ends.
func (s *Sidecar) receive(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) {
	for {
		r, err := stream.Recv()
		s.mu.Lock()
		if s.stream != stream { // replaced by a reconnect
			s.mu.Unlock()
			return
		}
		if err != nil {
			if s.err == nil {
				s.err = err
			}
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		if herr := s.handleLocked(r); herr != nil && s.err == nil {
			s.err = herr
		}
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// notifyLocked wakes WaitFor callers.
func (s *Sidecar) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor returns once cond, called with the sidecar's state locked, holds,
// or with an error when ctx ends or the stream ended.
func (s *Sidecar) WaitFor(ctx context.Context, cond func(View) bool) error {
	for {
		s.mu.Lock()
		ok, err, changed := cond(View{s.state}), s.err, s.changed
		s.mu.Unlock()
		switch {
		case ok:
			return nil
		case err != nil:
			return fmt.Errorf("envoymodel: stream ended: %w", err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ErrProtocol is returned (wrapped) for a response the model cannot use.
var ErrProtocol = errors.New("envoymodel: unexpected response")

// Stats returns what the sidecar counted so far.
func (s *Sidecar) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.snapshot()
}

// Subscribed lists, in order, every cluster name the sidecar asked for.
func (s *Sidecar) Subscribed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.state.order)
}
