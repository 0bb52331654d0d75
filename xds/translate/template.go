package translate

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// Cluster templates. A VIP's cluster is what its policy says (connect
// timeout, load balancing, circuit breakers, outlier detection, protocol
// options) plus a few fields that name the VIP (setClusterNames). Many VIPs
// share a policy, most of them the default one, so a ClusterTemplate
// encodes and validates what a policy says once, and a VIP's cluster is
// encoded from it by encoding only the fields that name the VIP and
// splicing them in, in the order proto.Marshal writes the fields of such a
// cluster (learnt from one it encoded: field-number order, but for a
// oneof, which it writes where it pleases). That gives the bytes
// proto.Marshal (deterministic) gives for the whole cluster, for a small
// part of the work (about 1 µs rather than 18 µs to build, validate and
// encode one): the first cluster a sidecar asks for is answered sooner.
// template_test.go checks the bytes against proto.Marshal of the built
// cluster, and the errors against its validation, for every golden case
// and for random policies and VIP names.

// Templates keeps cluster templates, one per policy, for VIPParts.
type Templates interface {
	// Template returns the template of a policy, as the registry has it:
	// one it keeps for policies with that key (KeyOf), or one it makes
	// with NewClusterTemplate and keeps.
	Template(policy registry.Policy) *ClusterTemplate
}

// ClusterTemplate is what one policy puts in the clusters of every VIP
// that has it, encoded once. Templates are immutable.
type ClusterTemplate struct {
	policy registry.Policy // normalized
	// fields is the deterministic encoding of clusterPolicy(policy); nil
	// in a template that builds whole clusters (VIPParts without one).
	fields []byte
	// order is the order of the top-level fields in the encoding of the
	// template's plaintext and secure clusters.
	order [2][]protowire.Number
	// err says why the clusters of this policy do not validate.
	err error
}

// templateVIP is the VIP whose clusters a template validates. Validation
// looks at what names the VIP only for lengths, which any VIP name
// (names.ValidateVIP: a DNS label) keeps within bounds, so the clusters of
// every VIP with the policy are valid if this one's are.
const templateVIP = "template"

// NewClusterTemplate returns the template of a policy, as the registry has
// it (normalized here).
func NewClusterTemplate(policy registry.Policy) *ClusterTemplate {
	p := policy.Normalize()
	t := &ClusterTemplate{policy: p}
	for i, secure := range []bool{false, true} {
		c := cluster(templateVIP, p, secure)
		if err := c.Validate(); err != nil {
			t.err = err
			return t
		}
		b, err := marshal(c)
		if err != nil {
			t.err = err
			return t
		}
		for len(b) > 0 {
			num, n := nextField(b)
			if len(t.order[i]) == 0 || t.order[i][len(t.order[i])-1] != num {
				t.order[i] = append(t.order[i], num)
			}
			b = b[n:]
		}
	}
	t.fields, t.err = marshal(clusterPolicy(p))
	return t
}

// resource returns a VIP's plaintext or secure cluster: encoded from the
// template's fields, or, from a template without them, built and
// validated.
func (t *ClusterTemplate) resource(vip string, secure bool) (Resource, error) {
	r := Resource{TypeURL: resource.ClusterType, Name: names.Cluster(vip, secure)}
	switch {
	case t.err != nil:
		return Resource{}, t.err
	case t.fields == nil:
		c := cluster(vip, t.policy, secure)
		if err := c.Validate(); err != nil {
			return Resource{}, err
		}
		r.Msg = c
		return r, nil
	}
	named, err := encodeClusterNames(vip, t.policy.Protocol, secure)
	if err != nil {
		return Resource{}, err
	}
	order := t.order[0]
	if secure {
		order = t.order[1]
	}
	r.Encoded = splice(order, named, t.fields)
	return r, nil
}

// marshal is the deterministic encoding of a message.
func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("translate: encode %T: %w", m, err)
	}
	return b, nil
}

// splice merges the encodings of two messages of one type that set
// different fields into the encoding of the message that sets both: their
// fields in the order given, as proto.Marshal writes them. The encodings
// are the package's own, so a field the order lacks is a programming
// error.
func splice(order []protowire.Number, a, b []byte) []byte {
	var records [16]record
	all := split(split(records[:0], a), b)
	out := make([]byte, 0, len(a)+len(b))
	n := 0
	for _, num := range order {
		for _, r := range all {
			if r.num == num {
				out = append(out, r.b...)
				n++
			}
		}
	}
	if n != len(all) {
		panic("translate: splice: a field the order lacks")
	}
	return out
}

// record is one field of an encoding, tag included.
type record struct {
	num protowire.Number
	b   []byte
}

// split appends the fields of an encoding to records.
func split(records []record, b []byte) []record {
	for len(b) > 0 {
		num, n := nextField(b)
		records = append(records, record{num, b[:n]})
		b = b[n:]
	}
	return records
}

// nextField returns the number and length of the first field of an encoding.
func nextField(b []byte) (protowire.Number, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		panic(fmt.Sprintf("translate: splice: %v", protowire.ParseError(n)))
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		panic(fmt.Sprintf("translate: splice: %v", protowire.ParseError(m)))
	}
	return num, n + m
}

// PolicyKey tells policies apart: two policies have the same key when
// they normalize to the same policy, and so the same ClusterTemplate.
type PolicyKey struct {
	protocol           registry.Protocol
	port, securePort   uint32
	plaintext          bool
	callersSet         bool
	callers            string
	loadBalancing      registry.LoadBalancing
	hashOn             bool
	hashHeader         string
	hashCookie         bool
	cookieName         string
	cookieTTL          bool
	cookieTTLValue     registry.Duration
	cookiePath         string
	hashSourceIP       bool
	timeouts           registry.Timeouts
	retryAttempts      uint32
	retryOnDefault     bool
	retryOn            string
	retryPerTry        registry.Duration
	retryBudgetPercent float64
	circuitBreakers    registry.CircuitBreakers
	outlier            bool
	outlierDetection   registry.OutlierDetection
	explicit           string
}

// KeyOf is the key of a policy, as the registry has it.
func KeyOf(policy registry.Policy) PolicyKey { return keyOf(policy.Normalize()) }

// keyOf is KeyOf of a normalized policy.
func keyOf(p registry.Policy) PolicyKey {
	k := PolicyKey{
		protocol: p.Protocol, port: p.Port, securePort: p.SecurePort, plaintext: p.PlaintextAllowed(),
		loadBalancing: p.LoadBalancing, timeouts: p.Timeouts,
		retryAttempts: p.Retries.Attempts, retryPerTry: p.Retries.PerTry, retryBudgetPercent: p.Retries.BudgetPerc,
		circuitBreakers: p.CircuitBreakers, explicit: strings.Join(p.Explicit, "\x00"),
	}
	// The default conditions, most policies', are not joined anew.
	if slices.Equal(p.Retries.On, defaultPolicy.Retries.On) {
		k.retryOnDefault = true
	} else {
		k.retryOn = strings.Join(p.Retries.On, "\x00")
	}
	if c := p.AllowedCallers; c != nil {
		k.callersSet, k.callers = true, strings.Join(*c, "\x00")
	}
	if h := p.HashOn; h != nil {
		k.hashOn, k.hashHeader, k.hashSourceIP = true, h.Header, h.SourceIP
		if c := h.Cookie; c != nil {
			k.hashCookie, k.cookieName, k.cookiePath = true, c.Name, c.Path
			if c.TTL != nil {
				k.cookieTTL, k.cookieTTLValue = true, *c.TTL
			}
		}
	}
	if o := p.OutlierDetection; o != nil {
		k.outlier, k.outlierDetection = true, *o
	}
	return k
}

// Field numbers of what setClusterNames sets, from the descriptors.
var (
	clusterName            = fieldNumber(&clusterv3.Cluster{}, "name")
	clusterType            = fieldNumber(&clusterv3.Cluster{}, "type")
	clusterEDS             = fieldNumber(&clusterv3.Cluster{}, "eds_cluster_config")
	clusterTransportSocket = fieldNumber(&clusterv3.Cluster{}, "transport_socket")
	edsServiceName         = fieldNumber(&clusterv3.Cluster_EdsClusterConfig{}, "service_name")
	// edsSource is the encoding of an EdsClusterConfig's eds_config, the
	// same for every cluster (edsConfig).
	edsSource = must(marshal(&clusterv3.Cluster_EdsClusterConfig{EdsConfig: edsConfig("").GetEdsConfig()}))
)

// encodeClusterNames is the deterministic encoding of a cluster with only
// what setClusterNames sets: written field by field, without building
// the message, but for a secure cluster's transport socket.
func encodeClusterNames(vip string, proto registry.Protocol, secure bool) ([]byte, error) {
	name := names.Cluster(vip, secure)
	b := make([]byte, 0, 2*len(name)+len(edsSource)+16)
	b = protowire.AppendTag(b, clusterName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, clusterType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(clusterv3.Cluster_EDS))
	b = protowire.AppendTag(b, clusterEDS, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(edsSource)+protowire.SizeTag(edsServiceName)+protowire.SizeBytes(len(name))))
	b = append(b, edsSource...)
	b = protowire.AppendTag(b, edsServiceName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	if secure {
		ts, err := marshal(upstreamTransportSocket(vip, proto))
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, clusterTransportSocket, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	return b, nil
}

// fieldNumber is the number of a message's field.
func fieldNumber(m proto.Message, field protoreflect.Name) protowire.Number {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(field)
	if fd == nil {
		panic(fmt.Sprintf("translate: %T has no field %s", m, field))
	}
	return fd.Number()
}

// must is for encodings made at start-up, which cannot fail.
func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
