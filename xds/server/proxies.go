package server

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Proxy describes one connected stream, for /debug/proxies.
type Proxy struct {
	NodeID         string
	Service        string
	StreamID       int64
	Protocol       string
	ConnectedSince time.Time
	Clusters       []string
	// Types are, for each type the stream was sent, what the proxy made
	// of it, in the order of Types.
	Types []TypeStatus
}

// Proxies lists the connected streams, oldest first.
func (s *Server) Proxies() []Proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Proxy, 0, len(s.streams))
	for _, st := range s.streams {
		if !st.admitted {
			continue
		}
		clusters := make(map[string]struct{})
		st.mu.Lock()
		for _, held := range st.held {
			if held == nil {
				continue
			}
			for name := range held.names {
				clusters[name] = struct{}{}
			}
		}
		types := st.syncStatus()
		st.mu.Unlock()
		out = append(out, Proxy{
			NodeID:         st.node.GetId(),
			Service:        st.node.GetCluster(),
			StreamID:       st.id,
			Protocol:       st.protocol,
			ConnectedSince: st.since,
			Clusters:       slices.Sorted(maps.Keys(clusters)),
			Types:          types,
		})
	}
	slices.SortFunc(out, func(a, b Proxy) int {
		if c := a.ConnectedSince.Compare(b.ConnectedSince); c != 0 {
			return c
		}
		return strings.Compare(a.NodeID, b.NodeID)
	})
	return out
}
