package translate

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// TestValidate runs go-control-plane's generated Validate() on every resource
// of every case, including the HttpProtocolOptions packed inside the Cluster,
// which Cluster.Validate does not look into.
func TestValidate(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			cluster := Cluster(c.svc.VIP)
			if err := SecureCluster(c.svc.VIP).Validate(); err != nil {
				t.Errorf("secure cluster: %v", err)
			}
			if err := SecureClusterLoadAssignment(c.svc).Validate(); err != nil {
				t.Errorf("secure endpoints: %v", err)
			}
			if err := cluster.Validate(); err != nil {
				t.Errorf("Cluster: %v", err)
			}
			opts := cluster.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
			var http httpv3.HttpProtocolOptions
			if err := opts.UnmarshalTo(&http); err != nil {
				t.Fatalf("unpack %s: %v", httpProtocolOptionsKey, err)
			}
			if err := http.Validate(); err != nil {
				t.Errorf("HttpProtocolOptions: %v", err)
			}
			if err := ClusterLoadAssignment(c.svc).Validate(); err != nil {
				t.Errorf("ClusterLoadAssignment: %v", err)
			}
		})
	}
}

// TestDeterministic translates every case twice, the second time with the
// instances in reverse order, and expects equal protos and identical bytes
// from a deterministic marshal.
func TestDeterministic(t *testing.T) {
	marshal := proto.MarshalOptions{Deterministic: true}
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			reversed := c.svc
			reversed.Instances = slices.Clone(c.svc.Instances)
			slices.Reverse(reversed.Instances)
			pairs := []struct {
				kind string
				a, b proto.Message
			}{
				{"cluster", Cluster(c.svc.VIP), Cluster(c.svc.VIP)},
				{"endpoints", ClusterLoadAssignment(c.svc), ClusterLoadAssignment(reversed)},
			}
			for _, p := range pairs {
				if !proto.Equal(p.a, p.b) {
					t.Errorf("%s: not equal:\n%s", p.kind, gocmp.Diff(p.a, p.b, protocmp.Transform()))
				}
				ab, err := marshal.Marshal(p.a)
				if err != nil {
					t.Fatal(err)
				}
				bb, err := marshal.Marshal(p.b)
				if err != nil {
					t.Fatal(err)
				}
				if string(ab) != string(bb) {
					t.Errorf("%s: deterministic marshal gave different bytes", p.kind)
				}
			}
		})
	}
}

// TestNormalizes checks that partial input translates exactly like its
// normalized form, so callers need not normalize.
func TestNormalizes(t *testing.T) {
	tests := []struct {
		name string
		svc  registry.Service
	}{
		{"empty policy", registry.Service{VIP: registry.VIP{Name: "payments"}}},
		{"partial policy", registry.Service{VIP: registry.VIP{Name: "payments", Policy: registry.Policy{
			Protocol:         registry.GRPC,
			Timeouts:         registry.Timeouts{Idle: registry.Duration(time.Minute)},
			CircuitBreakers:  registry.CircuitBreakers{MaxRequests: 10},
			OutlierDetection: &registry.OutlierDetection{Consecutive5xx: 2},
		}}}},
		{"partial instances", registry.Service{VIP: registry.VIP{Name: "payments"}, Instances: []registry.Instance{
			{ID: "a", Address: "10.0.0.1", Port: 8080},
			{ID: "b", Address: "10.0.0.2", Port: 8080, Zone: "z1", Status: registry.StatusDraining},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			normalized := tt.svc
			normalized.VIP.Policy = tt.svc.VIP.Policy.Normalize()
			normalized.Instances = nil
			for _, i := range tt.svc.Instances {
				normalized.Instances = append(normalized.Instances, i.Normalize())
			}
			if diff := gocmp.Diff(Cluster(normalized.VIP), Cluster(tt.svc.VIP), protocmp.Transform()); diff != "" {
				t.Errorf("Cluster (-normalized +partial):\n%s", diff)
			}
			if diff := gocmp.Diff(ClusterLoadAssignment(normalized), ClusterLoadAssignment(tt.svc), protocmp.Transform()); diff != "" {
				t.Errorf("ClusterLoadAssignment (-normalized +partial):\n%s", diff)
			}
		})
	}
}

// TestClusterIgnoresRouteLevelPolicy checks that the policy fields Envoy
// applies per route, and the ones discovery acts on, leave the Cluster as it
// is with an empty policy.
func TestClusterIgnoresRouteLevelPolicy(t *testing.T) {
	off := false
	tests := []struct {
		name   string
		policy registry.Policy
	}{
		{"ports", registry.Policy{Port: 80, SecurePort: 443}},
		{"plaintext off", registry.Policy{Plaintext: &off}},
		{"request timeout", registry.Policy{Timeouts: registry.Timeouts{Request: registry.Duration(3 * time.Second)}}},
		{"retry attempts", registry.Policy{Retries: registry.Retries{Attempts: 5}}},
		{"retry on", registry.Policy{Retries: registry.Retries{On: []string{"5xx"}}}},
		{"per-try timeout", registry.Policy{Retries: registry.Retries{PerTry: registry.Duration(time.Second)}}},
	}
	want := Cluster(registry.VIP{Name: "payments"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Cluster(registry.VIP{Name: "payments", Policy: tt.policy})
			if diff := gocmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("(-empty policy +with %s):\n%s", tt.name, diff)
			}
		})
	}
}

// TestEndpointHealth pins which statuses reach Envoy and as what.
func TestEndpointHealth(t *testing.T) {
	tests := []struct {
		status registry.Status
		want   []*endpointv3.LocalityLbEndpoints // nil: the instance is left out
	}{
		{registry.StatusUp, oneEndpoint(corev3.HealthStatus_HEALTHY)},
		{"", oneEndpoint(corev3.HealthStatus_HEALTHY)}, // Normalize makes it UP
		{registry.StatusDraining, oneEndpoint(corev3.HealthStatus_DRAINING)},
		{registry.StatusStarting, nil},
		{registry.StatusDown, nil},
		{registry.StatusOutOfService, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.status), func(t *testing.T) {
			svc := registry.Service{VIP: registry.VIP{Name: "payments"}, Instances: []registry.Instance{
				{ID: "i-1", VIP: "payments", Address: "10.0.0.1", Port: 8080, Zone: "z1", Status: tt.status},
			}}
			want := &endpointv3.ClusterLoadAssignment{ClusterName: "payments.vip", Endpoints: tt.want}
			if diff := gocmp.Diff(want, ClusterLoadAssignment(svc), protocmp.Transform()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// oneEndpoint is the expected locality of TestEndpointHealth's instance,
// written out in full rather than built with lbEndpoint.
func oneEndpoint(health corev3.HealthStatus) []*endpointv3.LocalityLbEndpoints {
	return []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{Zone: "z1"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       "10.0.0.1",
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
				Hostname: "i-1",
			}},
			HealthStatus:        health,
			LoadBalancingWeight: wrapperspb.UInt32(1),
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"xspace": {Fields: map[string]*structpb.Value{"instance_id": structpb.NewStringValue("i-1")}},
			}},
		}},
	}}
}

// TestCasesCoverModel fails when a model field, protocol, load-balancing
// policy or status has no golden case that sets it, so a new policy field
// cannot be added without a case showing what Envoy receives for it.
func TestCasesCoverModel(t *testing.T) {
	set := map[string]bool{}
	seen := map[string]bool{}
	for _, c := range loadCases(t) {
		markSet(set, "policy", reflect.ValueOf(c.svc.VIP.Policy))
		seen["protocol "+string(c.svc.VIP.Policy.Protocol)] = true
		seen["lb "+string(c.svc.VIP.Policy.LoadBalancing)] = true
		seen[fmt.Sprintf("outlier %t", c.svc.VIP.Policy.OutlierDetection != nil)] = true
		seen[fmt.Sprintf("instances %t", len(c.svc.Instances) > 0)] = true
		for _, i := range c.svc.Instances {
			markSet(set, "instance", reflect.ValueOf(i))
			seen["status "+string(i.Status)] = true
		}
	}
	var missing []string
	for _, path := range leafPaths("policy", reflect.TypeFor[registry.Policy]()) {
		if !set[path] {
			missing = append(missing, path)
		}
	}
	for _, path := range leafPaths("instance", reflect.TypeFor[registry.Instance]()) {
		if !set[path] {
			missing = append(missing, path)
		}
	}
	for _, want := range []string{
		"protocol ", "protocol http1", "protocol http2", "protocol grpc",
		"lb round_robin", "lb least_request", "lb random", "lb ring_hash", "lb maglev",
		"outlier true", "outlier false", "instances true", "instances false",
		"status UP", "status STARTING", "status DOWN", "status OUT_OF_SERVICE", "status DRAINING", "status ",
	} {
		if !seen[want] {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		t.Errorf("no case in %s sets: %v", inDir, missing)
	}
}

// markSet records the dotted path of every non-zero leaf field of v.
func markSet(set map[string]bool, path string, v reflect.Value) {
	switch {
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if !v.IsNil() {
			markSet(set, path, v.Elem())
		}
	case v.Kind() == reflect.Struct && v.Type().PkgPath() != "time":
		for i := range v.NumField() {
			markSet(set, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case !v.IsZero():
		set[path] = true
	}
}

// leafPaths lists the dotted paths markSet can record for type typ.
func leafPaths(path string, typ reflect.Type) []string {
	if typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Struct {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() == "time" {
		return []string{path}
	}
	var paths []string
	for i := range typ.NumField() {
		paths = append(paths, leafPaths(path+"."+typ.Field(i).Name, typ.Field(i).Type)...)
	}
	return paths
}

func BenchmarkCluster(b *testing.B) {
	vip := registry.VIP{Name: "payments", Policy: registry.Policy{
		Protocol:         registry.GRPC,
		LoadBalancing:    registry.LeastRequest,
		OutlierDetection: &registry.OutlierDetection{},
	}}
	b.ReportAllocs()
	for b.Loop() {
		Cluster(vip)
	}
}

func BenchmarkClusterLoadAssignment(b *testing.B) {
	svc := registry.Service{VIP: registry.VIP{Name: "payments"}}
	zones := []string{"us-east-1a", "us-east-1b", "us-east-1c"}
	for i := range 50 {
		svc.Instances = append(svc.Instances, registry.Instance{
			ID:       fmt.Sprintf("payments-%03d", i),
			VIP:      "payments",
			Address:  fmt.Sprintf("10.0.%d.%d", i/250, i%250+1),
			Port:     8080,
			Zone:     zones[i%len(zones)],
			Weight:   uint32(1 + i%3),
			Status:   registry.StatusUp,
			Metadata: map[string]string{"version": "v1"},
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		ClusterLoadAssignment(svc)
	}
}
