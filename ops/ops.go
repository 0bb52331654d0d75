// Package ops serves meshd's HTTP surface beside the REST API: /healthz,
// /readyz, /metrics and the /debug endpoints a platform engineer reads to
// see what the control plane holds and why.
package ops

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prisma-systems/xspace-mesh/api"
	"github.com/prisma-systems/xspace-mesh/discovery"
	"github.com/prisma-systems/xspace-mesh/internal/buildinfo"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/xds/server"
)

// Check is one readiness check's result.
type Check struct {
	OK     bool `json:"ok"`
	Detail any  `json:"detail,omitempty"`
}

// ProxyLister lists connected proxies (the xDS server).
type ProxyLister interface{ Proxies() []server.Proxy }

// VIPWatcher lists the VIPs discovery watches.
type VIPWatcher interface{ Watched() []discovery.WatchedVIP }

// CertLister lists the identity certificates held, without their keys.
type CertLister interface{ Certificates() []secrets.CertInfo }

// Deps is what the HTTP surface serves from.
type Deps struct {
	Logger   *slog.Logger
	API      http.Handler
	Gatherer prometheus.Gatherer
	Store    registry.Store
	Proxies  ProxyLister
	VIPs     VIPWatcher
	// Certs, when set, is listed at /debug/secrets.
	Certs CertLister
	// Checks are evaluated on every /readyz; all must be OK for 200.
	Checks map[string]func() Check
	// Config is shown at /debug/config.
	Config any
	// Hosts, when set, are the only Host headers answered (see Hosts).
	Hosts *Hosts
	// XDSAddress is where the xDS listener is bound, shown at /debug/info
	// so that meshctl finds xDS from the HTTP address alone.
	XDSAddress string
	// Access says who may use the REST API and the debug endpoints; the
	// zero value lets no request without a valid token through.
	Access api.Access
}

// public reports whether anyone may GET path: liveness, readiness and
// metrics, for load balancers and Prometheus.
func public(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// Handler returns the whole HTTP surface of meshd.
func Handler(d Deps) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", d.API)
	mux.Handle("/metrics", getOnly(promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{})))
	mux.Handle("/healthz", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})))
	mux.Handle("/readyz", getOnly(http.HandlerFunc(d.readyz)))
	mux.Handle(api.ProxiesPath, getOnly(http.HandlerFunc(d.proxies)))
	mux.Handle(api.VIPStatsPath, getOnly(http.HandlerFunc(d.vips)))
	mux.Handle(api.SecretsPath, getOnly(http.HandlerFunc(d.secrets)))
	mux.Handle(api.InfoPath, getOnly(http.HandlerFunc(d.info)))
	mux.Handle("/debug/config", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusOK, d.Config)
	})))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, http.StatusNotFound, api.CodeNotFound,
			"no such endpoint "+r.URL.Path+"; see /v1/vips, /metrics, /healthz, /readyz, /debug/info, /debug/proxies, /debug/vips, /debug/secrets, /debug/config", "")
	})
	h := api.Guard(mux, d.Access, public, d.Logger)
	if d.Hosts != nil {
		return guardHosts(*d.Hosts, h)
	}
	return h
}

// getOnly answers methods other than GET (and HEAD) in the API's JSON error shape.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			api.WriteError(w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use GET", "")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (d Deps) readyz(w http.ResponseWriter, _ *http.Request) {
	checks := make(map[string]Check, len(d.Checks))
	ready := true
	for _, name := range slices.Sorted(maps.Keys(d.Checks)) {
		c := d.Checks[name]()
		checks[name] = c
		ready = ready && c.OK
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	api.WriteJSON(w, status, map[string]any{"ready": ready, "checks": checks})
}

// secrets lists every identity certificate held: service, serial, expiry,
// renewal state. Never a key.
func (d Deps) secrets(w http.ResponseWriter, _ *http.Request) {
	certs := []secrets.CertInfo{}
	if d.Certs != nil {
		certs = d.Certs.Certificates()
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"certificates": certs})
}

// info says which build answers and where it serves xDS.
func (d Deps) info(w http.ResponseWriter, _ *http.Request) {
	b := buildinfo.Get()
	api.WriteJSON(w, http.StatusOK, api.ServerInfo{
		Version: b.Version, Revision: b.Revision, GoVersion: b.GoVersion, XDSAddress: d.XDSAddress,
	})
}

func (d Deps) proxies(w http.ResponseWriter, _ *http.Request) {
	list := d.Proxies.Proxies()
	out := make([]api.ProxyInfo, 0, len(list))
	for _, p := range list {
		out = append(out, api.ProxyInfo{
			NodeID: p.NodeID, Service: p.Service, StreamID: p.StreamID, Protocol: p.Protocol,
			ConnectedSince: p.ConnectedSince, Clusters: p.Clusters, Types: typeSyncs(p.Types),
		})
	}
	api.WriteJSON(w, http.StatusOK, api.ProxyList{Proxies: out})
}

// typeSyncs is what a stream's responses came to, on the wire.
func typeSyncs(ts []server.TypeStatus) []api.TypeSync {
	out := make([]api.TypeSync, 0, len(ts))
	for _, t := range ts {
		s := api.TypeSync{
			Type: t.Type, State: t.State, SentVersion: t.SentVersion, SentNonce: t.SentNonce,
			AckedVersion: t.AckedVersion, AckedNonce: t.AckedNonce,
		}
		if t.NACKs > 0 {
			s.LastNACK = &api.NACK{Version: t.NACKVersion, Nonce: t.NACKNonce, Error: t.NACKError, At: t.NACKAt, Count: t.NACKs}
		}
		out = append(out, s)
	}
	return out
}

// subscribers counts, per VIP, the connected streams that hold any of its
// names (its clusters, endpoints, and a proxyless gRPC client's listeners
// and route): a client is one subscriber however many of them it holds.
func (d Deps) subscribers() map[string]int {
	out := map[string]int{}
	for _, p := range d.Proxies.Proxies() {
		seen := map[string]bool{}
		for _, name := range p.Clusters {
			if vip, _, ok := names.ParseResource(name); ok && !seen[vip] {
				seen[vip] = true
				out[vip]++
			}
		}
	}
	return out
}

// vips merges the registry's VIPs with discovery's view. It lists the
// world, which is fine for a debug endpoint and never done on the xDS path.
func (d Deps) vips(w http.ResponseWriter, r *http.Request) {
	stats, err := d.vipStats(r.Context())
	if err != nil {
		d.Logger.Error("debug vips", "error", err)
		api.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the registry cannot be read right now; retry, and see meshd's log", "")
		return
	}
	api.WriteJSON(w, http.StatusOK, api.VIPStatList{VIPs: stats})
}

func (d Deps) vipStats(ctx context.Context) ([]api.VIPStat, error) {
	byName := make(map[string]*api.VIPStat)
	vips, err := d.Store.ListVIPs(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vips {
		insts, err := d.Store.Instances(ctx, v.Name)
		if err != nil {
			continue // deleted since the list
		}
		s := &api.VIPStat{Name: v.Name, Instances: len(insts)}
		for _, i := range insts {
			if i.Status.Routable() {
				s.Routable++
			}
		}
		byName[v.Name] = s
	}
	subscribers := d.subscribers()
	for _, wv := range d.VIPs.Watched() {
		s := byName[wv.Name]
		if s == nil { // subscribed to but not registered
			s = &api.VIPStat{Name: wv.Name}
			byName[wv.Name] = s
		}
		s.Watched, s.Subscribers = true, subscribers[wv.Name]
	}
	out := make([]api.VIPStat, 0, len(byName))
	for _, s := range byName {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
