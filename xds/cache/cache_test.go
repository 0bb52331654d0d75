package cache

import (
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func cluster(name string, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(timeout)}
}

// deltaWatch opens a watch the way go-control-plane's delta server does and
// returns the channel it answers on.
func openDelta(t *testing.T, c *Cache, sub *stream.Subscription) chan gcpcache.DeltaResponse {
	t.Helper()
	ch := make(chan gcpcache.DeltaResponse, 1)
	cancel, err := c.CreateDeltaWatch(&gcpcache.DeltaRequest{TypeUrl: resource.ClusterType}, sub, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return ch
}

func take(t *testing.T, ch chan gcpcache.DeltaResponse, sub *stream.Subscription) (names, removed []string) {
	t.Helper()
	select {
	case r := <-ch:
		msg, _ := r.GetDeltaDiscoveryResponse()
		for _, res := range msg.GetResources() {
			names = append(names, res.GetName())
		}
		sub.SetReturnedResources(r.GetNextVersionMap())
		return names, msg.GetRemovedResources()
	default:
		return nil, nil
	}
}

func TestDeltaAnswersAbsentOnceAndPushesOnAppearance(t *testing.T) {
	c := New()
	sub := stream.NewDeltaSubscription([]string{"a.vip"}, nil, nil, false)
	names, removed := take(t, openDelta(t, c, &sub), &sub)
	if len(names) != 0 || !slices.Equal(removed, []string{"a.vip"}) {
		t.Fatalf("absent name: names %v removed %v", names, removed)
	}
	ch := openDelta(t, c, &sub) // the ACK: nothing new to say
	if names, removed := take(t, ch, &sub); names != nil || removed != nil {
		t.Fatalf("ACK of an absent answer was answered again: %v %v", names, removed)
	}
	if err := c.Set("a.vip", cluster("a.vip", time.Second)); err != nil {
		t.Fatal(err)
	}
	if names, _ := take(t, ch, &sub); !slices.Equal(names, []string{"a.vip"}) {
		t.Fatalf("appearance not pushed: %v", names)
	}
}

func TestIdenticalContentWakesNoOne(t *testing.T) {
	c := New()
	if err := c.Set("a.vip", cluster("a.vip", time.Second)); err != nil {
		t.Fatal(err)
	}
	v1, _ := c.Version(resource.ClusterType, "a.vip")
	sub := stream.NewDeltaSubscription([]string{"a.vip"}, nil, nil, false)
	take(t, openDelta(t, c, &sub), &sub)
	ch := openDelta(t, c, &sub)
	if err := c.Set("a.vip", cluster("a.vip", time.Second)); err != nil {
		t.Fatal(err)
	}
	if names, _ := take(t, ch, &sub); names != nil {
		t.Fatalf("identical content was pushed: %v", names)
	}
	if err := c.Set("a.vip", cluster("a.vip", 2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if names, _ := take(t, ch, &sub); !slices.Equal(names, []string{"a.vip"}) {
		t.Fatalf("changed content not pushed: %v", names)
	}
	if v2, _ := c.Version(resource.ClusterType, "a.vip"); v2 == v1 {
		t.Fatal("version did not change with content")
	}
	// Versions come from content: another cache agrees.
	other := New()
	_ = other.Set("a.vip", cluster("a.vip", time.Second))
	if v, _ := other.Version(resource.ClusterType, "a.vip"); v != v1 {
		t.Fatalf("same content, different versions %q and %q", v, v1)
	}
}

func TestWildcardGetsOneEmptyAnswerNotTheWorld(t *testing.T) {
	c := New()
	_ = c.Set("a.vip", cluster("a.vip", time.Second))
	sub := stream.NewDeltaSubscription([]string{"*"}, nil, nil, false)
	ch := openDelta(t, c, &sub)
	select {
	case r := <-ch:
		msg, _ := r.GetDeltaDiscoveryResponse()
		if len(msg.GetResources()) != 0 {
			t.Fatalf("wildcard was sent %d resources", len(msg.GetResources()))
		}
		sub.SetReturnedResources(r.GetNextVersionMap())
	default:
		t.Fatal("wildcard subscription got no first answer")
	}
	if names, removed := take(t, openDelta(t, c, &sub), &sub); names != nil || removed != nil {
		t.Fatalf("wildcard answered twice: %v %v", names, removed)
	}
}

func TestSotwDoesNotRepeatAfterNACK(t *testing.T) {
	c := New()
	_ = c.Set("a.vip", cluster("a.vip", time.Second))
	sub := stream.NewSotwSubscription([]string{"a.vip"}, false)
	ch := make(chan gcpcache.Response, 1)
	if _, err := c.CreateWatch(&gcpcache.Request{TypeUrl: resource.ClusterType, ResourceNames: []string{"a.vip"}}, sub, ch); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	nack := &gcpcache.Request{
		TypeUrl: resource.ClusterType, ResourceNames: []string{"a.vip"},
		ErrorDetail: &statuspb.Status{Message: "rejected"},
	}
	if _, err := c.CreateWatch(nack, sub, ch); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("the rejected content was sent again at once")
	default:
	}
	_ = c.Set("a.vip", cluster("a.vip", 3*time.Second))
	select {
	case r2 := <-ch:
		if r2.GetResponseVersion() == r.GetResponseVersion() {
			t.Fatal("new content carried the old version")
		}
	default:
		t.Fatal("a change after a NACK was not sent")
	}
}
