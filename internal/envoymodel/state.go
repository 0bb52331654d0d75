package envoymodel

import (
	"fmt"
	"maps"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// state is what the sidecar holds; guarded by Sidecar.mu.
type state struct {
	clusters  map[string]*cluster
	order     []string            // cluster names asked for, in order
	endpoints map[string]*watched // by EDS name
	secrets   map[string]*watched // by SDS name
	// queuedCDS are cluster names asked for while cluster requests were
	// held back; heldACKs the nonces of cluster responses not yet ACKed.
	queuedCDS []string
	heldACKs  []string
	// warmingSet are the clusters warming.
	warmingSet map[*cluster]struct{}
	stats      Stats
}

// cluster is one cluster name the sidecar asked for, or was sent.
type cluster struct {
	asked   bool
	version string
	// msg is the cluster in use once active; next the one warming.
	msg    *clusterv3.Cluster
	next   *clusterv3.Cluster
	active bool
	// warming: waiting for its endpoints (needEndpoints: an update of eds
	// after the edsSeen-th, the last one held when the cluster came), then
	// for its secrets.
	warming       bool
	needEndpoints bool
	eds           string
	edsSeen       int
	secrets       []string
	waiters       []chan Result
}

// watched is an endpoints or secret name the sidecar subscribed to.
type watched struct {
	version string
	removed bool
	cla     *endpointv3.ClusterLoadAssignment
	// updates counts the times it was received or removed.
	updates int
}

// Stats count the sidecar's traffic: per type URL, names subscribed,
// resources received and names removed, overall and since the stream was
// last (re)connected.
type Stats struct {
	Requests          int
	Subscribes        map[string]int
	Received          map[string]int
	Removed           map[string]int
	ReceivedSinceOpen int
	RemovedSinceOpen  int
}

func newState() *state {
	return &state{
		clusters: map[string]*cluster{}, endpoints: map[string]*watched{}, secrets: map[string]*watched{},
		warmingSet: map[*cluster]struct{}{},
		stats:      Stats{Subscribes: map[string]int{}, Received: map[string]int{}, Removed: map[string]int{}},
	}
}

func (st *state) cluster(name string) *cluster {
	c := st.clusters[name]
	if c == nil {
		c = &cluster{}
		st.clusters[name] = c
	}
	return c
}

func (st *state) warming() bool { return len(st.warmingSet) > 0 }

// setWarming marks a cluster warming or not.
func (st *state) setWarming(c *cluster, on bool) {
	c.warming = on
	if on {
		st.warmingSet[c] = struct{}{}
	} else {
		delete(st.warmingSet, c)
	}
}

// reconnected forgets what belonged to the old stream.
func (st *state) reconnected() {
	st.heldACKs = nil
	st.stats.ReceivedSinceOpen, st.stats.RemovedSinceOpen = 0, 0
	// Queued names go out with the re-subscription (held lists them).
	st.queuedCDS = nil
}

// held lists the names of a type the sidecar subscribed to, and the
// versions it holds (rule 8).
func (st *state) held(typeURL string) ([]string, map[string]string) {
	versions := map[string]string{}
	var names []string
	switch typeURL {
	case resource.ClusterType:
		names = slices.Clone(st.order)
		for name, c := range st.clusters {
			if c.version != "" {
				versions[name] = c.version
			}
		}
	case resource.EndpointType, resource.SecretType:
		m := st.endpoints
		if typeURL == resource.SecretType {
			m = st.secrets
		}
		names = slices.Sorted(maps.Keys(m))
		for name, w := range m {
			if w.version != "" {
				versions[name] = w.version
			}
		}
	}
	return names, versions
}

// snapshot copies the stats.
func (st *state) snapshot() Stats {
	out := st.stats
	out.Subscribes = maps.Clone(out.Subscribes)
	out.Received = maps.Clone(out.Received)
	out.Removed = maps.Clone(out.Removed)
	return out
}

func (st *state) count(req *discoveryv3.DeltaDiscoveryRequest) {
	st.stats.Requests++
	st.stats.Subscribes[req.GetTypeUrl()] += len(req.GetResourceNamesSubscribe())
}

// handleLocked applies a response and sends what it calls for.
func (s *Sidecar) handleLocked(r *discoveryv3.DeltaDiscoveryResponse) error {
	st := s.state
	st.stats.Received[r.GetTypeUrl()] += len(r.GetResources())
	st.stats.Removed[r.GetTypeUrl()] += len(r.GetRemovedResources())
	st.stats.ReceivedSinceOpen += len(r.GetResources())
	st.stats.RemovedSinceOpen += len(r.GetRemovedResources())
	var err error
	switch r.GetTypeUrl() {
	case resource.ClusterType:
		err = s.clustersLocked(r)
	case resource.EndpointType:
		err = s.endpointsLocked(r)
	case resource.SecretType:
		err = s.secretsLocked(r)
	default:
		err = fmt.Errorf("%w: type %s", ErrProtocol, r.GetTypeUrl())
	}
	ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}
	if r.GetTypeUrl() == resource.ClusterType && st.warming() {
		st.heldACKs = append(st.heldACKs, r.GetNonce()) // rule 5
	} else {
		s.sendLocked(ack)
	}
	s.resumeLocked()
	return err
}

// clustersLocked applies a cluster response (rules 2, 3).
func (s *Sidecar) clustersLocked(r *discoveryv3.DeltaDiscoveryResponse) error {
	st := s.state
	var subscribe []string
	for _, res := range r.GetResources() {
		var msg clusterv3.Cluster
		if err := res.GetResource().UnmarshalTo(&msg); err != nil {
			return fmt.Errorf("%w: cluster %s: %w", ErrProtocol, res.GetName(), err)
		}
		c := st.cluster(res.GetName())
		c.version, c.next, c.needEndpoints = res.GetVersion(), &msg, true
		st.setWarming(c, true)
		c.eds = msg.GetEdsClusterConfig().GetServiceName()
		if c.eds == "" {
			c.eds = res.GetName()
		}
		c.secrets = secretNames(&msg)
		w := st.endpoints[c.eds]
		if w == nil {
			w = &watched{}
			st.endpoints[c.eds] = w
			subscribe = append(subscribe, c.eds)
		}
		// Already watched: no request; wait for the server to send it again.
		c.edsSeen = w.updates
	}
	// The endpoints of one cluster response are asked for together
	// (cds_api_helper.cc pauses EDS for the length of a batch).
	if len(subscribe) > 0 {
		s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: subscribe})
	}
	for _, name := range r.GetRemovedResources() {
		c := st.cluster(name)
		c.version, c.msg, c.next, c.active, c.needEndpoints = "", nil, nil, false, false
		st.setWarming(c, false)
		c.finish(NotFound)
	}
	return nil
}

// endpointsLocked applies an endpoints response (rules 3, 4).
func (s *Sidecar) endpointsLocked(r *discoveryv3.DeltaDiscoveryResponse) error {
	st := s.state
	update := func(name string) *watched {
		w := st.endpoints[name]
		if w == nil {
			w = &watched{}
			st.endpoints[name] = w
		}
		w.updates++
		return w
	}
	for _, res := range r.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if err := res.GetResource().UnmarshalTo(&cla); err != nil {
			return fmt.Errorf("%w: endpoints %s: %w", ErrProtocol, res.GetName(), err)
		}
		w := update(res.GetName())
		w.version, w.cla, w.removed = res.GetVersion(), &cla, false
	}
	for _, name := range r.GetRemovedResources() {
		w := update(name)
		w.version, w.cla, w.removed = "", nil, true
	}
	var secrets []string
	for c := range st.warmingSet {
		w := st.endpoints[c.eds]
		if !c.needEndpoints || w == nil || w.updates <= c.edsSeen {
			continue
		}
		c.needEndpoints = false
		for _, name := range c.secrets {
			if st.secrets[name] == nil {
				st.secrets[name] = &watched{}
				secrets = append(secrets, name)
			}
		}
	}
	if len(secrets) > 0 {
		s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesSubscribe: secrets})
	}
	return nil
}

// secretsLocked applies a secrets response (rule 4).
func (s *Sidecar) secretsLocked(r *discoveryv3.DeltaDiscoveryResponse) error {
	for _, res := range r.GetResources() {
		s.state.secrets[res.GetName()] = &watched{version: res.GetVersion()}
	}
	for _, name := range r.GetRemovedResources() {
		s.state.secrets[name] = &watched{removed: true}
	}
	return nil
}

// resumeLocked activates the clusters whose endpoints and secrets are in,
// and once none warms, sends what was held back (rule 5).
func (s *Sidecar) resumeLocked() {
	st := s.state
	for c := range st.warmingSet {
		if c.needEndpoints {
			continue
		}
		ready := true
		for _, name := range c.secrets {
			if w := st.secrets[name]; w == nil || (w.version == "" && !w.removed) {
				ready = false
			}
		}
		if ready {
			c.active, c.msg, c.next = true, c.next, nil
			st.setWarming(c, false)
			c.finish(Found)
		}
	}
	if st.warming() {
		return
	}
	for _, nonce := range st.heldACKs {
		s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: nonce})
	}
	st.heldACKs = nil
	if len(st.queuedCDS) > 0 {
		names := st.queuedCDS
		st.queuedCDS = nil
		s.sendLocked(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: names})
	}
}

func (c *cluster) finish(r Result) {
	for _, w := range c.waiters {
		w <- r
	}
	c.waiters = nil
}

// secretNames are the SDS secrets a cluster's TLS transport socket names.
func secretNames(c *clusterv3.Cluster) []string {
	var tls tlsv3.UpstreamTlsContext
	if c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls) != nil {
		return nil
	}
	common := tls.GetCommonTlsContext()
	var out []string
	for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
		out = append(out, sds.GetName())
	}
	if n := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); n != "" {
		out = append(out, n)
	}
	if n := common.GetValidationContextSdsSecretConfig().GetName(); n != "" {
		out = append(out, n)
	}
	return out
}

// View is the sidecar's state as WaitFor conditions read it.
type View struct{ st *state }

// Cluster returns the cluster of a name the sidecar uses (the last one
// that finished warming), and whether another one is warming.
func (v View) Cluster(name string) (active *clusterv3.Cluster, warming bool) {
	c := v.st.clusters[name]
	if c == nil {
		return nil, false
	}
	return c.msg, c.warming
}

// Endpoints returns the endpoints the sidecar holds of an EDS name.
func (v View) Endpoints(name string) *endpointv3.ClusterLoadAssignment {
	if w := v.st.endpoints[name]; w != nil {
		return w.cla
	}
	return nil
}

// Secret reports whether the sidecar holds a secret.
func (v View) Secret(name string) bool {
	w := v.st.secrets[name]
	return w != nil && w.version != ""
}

// Stats returns what the sidecar counted so far (see Sidecar.Stats).
func (v View) Stats() Stats { return v.st.snapshot() }
