package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Paths of the debug endpoints meshd serves and the client reads.
const (
	ProxiesPath  = "/debug/proxies"
	VIPStatsPath = "/debug/vips"
)

// maxTTLSeconds is registry.MaxTTL in the API's unit.
const maxTTLSeconds = int64(registry.MaxTTL / registry.Duration(time.Second))

// Registration is the body of PUT /v1/vips/{vip}/instances/{id}: what an
// instance says about itself. Fields left out take the registry's defaults
// (weight 1, status UP, a 30-second lease); the Go client leaves zero fields
// out. Given explicitly, weight 0 and ttl_seconds 0 are refused (see
// ZeroWeightHint), and secure_port 0 means none, as when it is left out.
type Registration struct {
	Address    string            `json:"address"`
	Port       uint32            `json:"port"`
	SecurePort uint32            `json:"secure_port,omitempty"`
	Zone       string            `json:"zone,omitempty"`
	Weight     uint32            `json:"weight,omitempty"`
	Status     registry.Status   `json:"status,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// TTLSeconds is the lease in whole seconds: the instance expires when no
	// heartbeat arrives for this long.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// Instance is a registered instance as the API returns it.
type Instance struct {
	ID           string            `json:"id"`
	VIP          string            `json:"vip"`
	Address      string            `json:"address"`
	Port         uint32            `json:"port"`
	SecurePort   uint32            `json:"secure_port,omitempty"`
	Zone         string            `json:"zone,omitempty"`
	Weight       uint32            `json:"weight"`
	Status       registry.Status   `json:"status"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	TTLSeconds   int64             `json:"ttl_seconds"`
	RegisteredAt time.Time         `json:"registered_at"`
	RenewedAt    time.Time         `json:"renewed_at"`
	// Lease, in a listing of a VIP's instances, is "ok", "grace" (restored
	// at the registry's start and not renewed since) or "overdue" (its TTL
	// passed without a renewal: it is held by self-preservation or about to
	// expire). The Consul registry keeps no leases of its own and leaves it
	// out, as do the answers to a registration or a status change.
	Lease registry.Lease `json:"lease,omitempty"`
}

// renewal is the answer to PUT /v1/vips/{vip}/instances/{id}/heartbeat.
type renewal struct {
	RenewedAt time.Time `json:"renewed_at"`
}

// ProxyInfo is one connected xDS stream, as GET /debug/proxies lists it.
type ProxyInfo struct {
	NodeID   string `json:"node_id"`
	Service  string `json:"service"`
	StreamID int64  `json:"stream_id"`
	// Protocol is "delta" or "sotw".
	Protocol       string    `json:"protocol"`
	ConnectedSince time.Time `json:"connected_since"`
	// Clusters are the cluster names the proxy holds.
	Clusters []string `json:"clusters"`
	// Types are, for each resource type the stream was sent, the last
	// response sent and what the proxy made of it.
	Types []TypeSync `json:"types,omitempty"`
}

// States of TypeSync.
const (
	// SyncSynced: the proxy acknowledged the last response sent.
	SyncSynced = "SYNCED"
	// SyncPending: the proxy has not answered the last response sent yet.
	SyncPending = "PENDING"
	// SyncNACKed: the proxy rejected the last response sent.
	SyncNACKed = "NACKED"
)

// TypeSync is what one resource type's responses on a stream came to.
// Versions are the responses' version_info (state of the world) or
// system_version_info (delta); nonces identify single responses.
type TypeSync struct {
	// Type is lds, rds, cds, eds or sds.
	Type string `json:"type"`
	// State is SyncSynced, SyncPending or SyncNACKed.
	State       string `json:"state"`
	SentVersion string `json:"sent_version"`
	SentNonce   string `json:"sent_nonce"`
	// AckedVersion is empty when the proxy acknowledged an earlier response
	// than the last sent, whose version meshd does not keep.
	AckedVersion string `json:"acked_version,omitempty"`
	AckedNonce   string `json:"acked_nonce,omitempty"`
	// LastNACK is the last response the proxy rejected on this stream.
	LastNACK *NACK `json:"last_nack,omitempty"`
}

// NACK is a response a proxy rejected, and why.
type NACK struct {
	Version string    `json:"version,omitempty"`
	Nonce   string    `json:"nonce"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	// Count is how many responses of the type the stream rejected.
	Count int `json:"count"`
}

// VIPStat is the control plane's view of one VIP, as GET /debug/vips lists it.
type VIPStat struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	// Routable counts the instances that receive new traffic (status UP).
	Routable int `json:"routable"`
	// Subscribers counts the proxies holding one of the VIP's clusters.
	Subscribers int `json:"subscribers"`
	// Watched says whether discovery is watching the VIP in the registry.
	Watched bool `json:"watched"`
}

// ProxyList is the body of GET /debug/proxies.
type ProxyList struct {
	Proxies []ProxyInfo `json:"proxies"`
}

// VIPStatList is the body of GET /debug/vips.
type VIPStatList struct {
	VIPs []VIPStat `json:"vips"`
}

type vipList struct {
	VIPs []registry.VIP `json:"vips"`
}

type instanceList struct {
	Instances []Instance `json:"instances"`
}

type statusChange struct {
	Status registry.Status `json:"status"`
}

// ZeroWeightHint is why weight 0 is refused and what to do instead.
const ZeroWeightHint = "weight 0 would keep the instance registered but never chosen; to stop sending it new " +
	"requests set its status to DRAINING (it finishes what it has) or OUT_OF_SERVICE " +
	"(meshctl instance status VIP ID DRAINING), or leave weight out for 1"

// refuseZeros refuses the numbers of a registration body (JSON) given as 0
// where 0 is not a value, saying what to do instead.
func refuseZeros(body []byte) error {
	var given struct {
		Weight     *uint32 `json:"weight"`
		TTLSeconds *int64  `json:"ttl_seconds"`
	}
	_ = json.Unmarshal(body, &given) // it decoded into a Registration already, so this cannot fail
	switch {
	case given.Weight != nil && *given.Weight == 0:
		return errorf(http.StatusBadRequest, CodeInvalidArgument, "weight", "weight: %s", ZeroWeightHint)
	case given.TTLSeconds != nil && *given.TTLSeconds == 0:
		return errorf(http.StatusBadRequest, CodeInvalidArgument, "ttl_seconds",
			"ttl_seconds: 0 would expire the instance at once; use %d to %d, or leave it out for %d",
			int64(registry.MinTTL.D()/time.Second), maxTTLSeconds, int64(registry.DefaultTTL.D()/time.Second))
	}
	return nil
}

// instance converts a registration to the registry's model, checking what
// only the wire form can get wrong.
func (r Registration) instance(vip, id string) (registry.Instance, error) {
	if r.TTLSeconds < 0 || r.TTLSeconds > maxTTLSeconds {
		return registry.Instance{}, errorf(http.StatusBadRequest, CodeInvalidArgument, "ttl_seconds",
			"ttl_seconds: %d is out of range; use %d to %d, or leave it out for %d",
			r.TTLSeconds, int64(registry.MinTTL.D()/time.Second), maxTTLSeconds, int64(registry.DefaultTTL.D()/time.Second))
	}
	return registry.Instance{
		ID:         id,
		VIP:        vip,
		Address:    r.Address,
		Port:       r.Port,
		SecurePort: r.SecurePort,
		Zone:       r.Zone,
		Weight:     r.Weight,
		Status:     r.Status,
		Metadata:   r.Metadata,
		TTL:        registry.Duration(time.Duration(r.TTLSeconds) * time.Second),
	}, nil
}

// wireInstance converts a stored instance to the API's form.
func wireInstance(i registry.Instance) Instance {
	return Instance{
		ID:           i.ID,
		VIP:          i.VIP,
		Address:      i.Address,
		Port:         i.Port,
		SecurePort:   i.SecurePort,
		Zone:         i.Zone,
		Weight:       i.Weight,
		Status:       i.Status,
		Metadata:     i.Metadata,
		TTLSeconds:   int64((i.TTL.D() + time.Second - 1) / time.Second),
		RegisteredAt: i.RegisteredAt,
		RenewedAt:    i.RenewedAt,
	}
}
