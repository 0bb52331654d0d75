package server

import (
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// typeSync is what one type's responses on one stream came to: the last
// response sent, the last one the proxy acknowledged, and the last it
// rejected (NACK) with its reason. It is what `meshctl proxy-status` and
// /debug/proxies show. A stream's entries are guarded by its mu; each is
// made at the type's first response, so that a stream costs nothing for
// the types it never receives, and nothing is allocated per response.
type typeSync struct {
	// The version and nonce of the last response sent. A delta response's
	// version is its system_version_info, a state-of-the-world response's
	// its version_info.
	sentVersion, sentNonce string
	// The last response acknowledged: its nonce, and its version when the
	// server knows it (a state-of-the-world proxy says which it applied; a
	// delta proxy acknowledging an earlier response than the last sent
	// leaves it empty).
	ackedVersion, ackedNonce string
	// The last response rejected, with the proxy's error text.
	nackVersion, nackNonce, nackError string
	nackAt                            time.Time
	nacks                             int
}

// maxNACKText bounds the error text of a NACK kept for a stream: Envoy's
// can list every rejected resource.
const maxNACKText = 1024

// typeIndex is the index of a type in Types, and of its entries in a
// stream's per-type arrays (streamState.syncs, streamState.held); -1 for a
// type the server does not serve.
func typeIndex(typeURL string) int {
	switch typeURL {
	case resource.ListenerType:
		return 0
	case resource.RouteType:
		return 1
	case resource.ClusterType:
		return 2
	case resource.EndpointType:
		return 3
	case resource.SecretType:
		return 4
	}
	return -1
}

// sent records a response about to be sent on a stream.
func (s *Server) sent(protocol string, id int64, typeURL, version, nonce string) {
	i := typeIndex(typeURL)
	if i < 0 {
		return
	}
	s.mu.RLock()
	st := s.streams[streamKey{protocol, id}]
	s.mu.RUnlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	ts := st.syncs[i]
	if ts == nil {
		ts = &typeSync{}
		st.syncs[i] = ts
	}
	ts.sentVersion, ts.sentNonce = version, nonce
	st.mu.Unlock()
}

// versioned is a state-of-the-world request, which says which version the
// proxy applied.
type versioned interface{ GetVersionInfo() string }

// answered records what a request says of an earlier response: nothing
// for a request that answers none, else an ACK or, with an error detail,
// a NACK.
func (st *streamState) answered(typeURL string, req xdsRequest, now func() time.Time) {
	nonce := req.GetResponseNonce()
	i := typeIndex(typeURL)
	if nonce == "" || i < 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	ts := st.syncs[i]
	if ts == nil { // a nonce of an earlier stream: nothing was sent on this one
		return
	}
	version := ""
	if nonce == ts.sentNonce {
		version = ts.sentVersion
	}
	detail := req.GetErrorDetail()
	if detail == nil {
		if v, ok := req.(versioned); ok {
			version = v.GetVersionInfo()
		}
		ts.ackedVersion, ts.ackedNonce = version, nonce
		return
	}
	msg := detail.GetMessage()
	if len(msg) > maxNACKText {
		msg = msg[:maxNACKText] + "..."
	}
	ts.nackVersion, ts.nackNonce, ts.nackError, ts.nackAt = version, nonce, strings.Clone(msg), now()
	ts.nacks++
}

// Sync states of one type on one stream (TypeStatus.State).
const (
	// SyncSynced: the proxy acknowledged the last response sent.
	SyncSynced = "SYNCED"
	// SyncPending: the last response sent is not answered yet.
	SyncPending = "PENDING"
	// SyncNACKed: the proxy rejected the last response sent.
	SyncNACKed = "NACKED"
)

// TypeStatus is what one type's responses on a stream came to, for
// /debug/proxies and meshctl proxy-status.
type TypeStatus struct {
	// Type is the metric label of the type: lds, rds, cds, eds, sds.
	Type string
	// State is SyncSynced, SyncPending or SyncNACKed.
	State                  string
	SentVersion, SentNonce string
	// AckedVersion is empty when the proxy acknowledged an earlier
	// response than the last sent, whose version is not kept.
	AckedVersion, AckedNonce string
	// The last NACK, if any, and how many the stream sent for the type.
	NACKVersion, NACKNonce, NACKError string
	NACKAt                            time.Time
	NACKs                             int
}

// syncStatus returns the stream's entries, in the order of Types. Called
// with st.mu held.
func (st *streamState) syncStatus() []TypeStatus {
	var out []TypeStatus
	for i, ts := range st.syncs {
		if ts == nil {
			continue
		}
		state := SyncPending
		switch ts.sentNonce {
		case ts.ackedNonce:
			state = SyncSynced
		case ts.nackNonce:
			state = SyncNACKed
		}
		out = append(out, TypeStatus{
			Type: typeLabel(Types[i]), State: state,
			SentVersion: ts.sentVersion, SentNonce: ts.sentNonce,
			AckedVersion: ts.ackedVersion, AckedNonce: ts.ackedNonce,
			NACKVersion: ts.nackVersion, NACKNonce: ts.nackNonce, NACKError: ts.nackError, NACKAt: ts.nackAt, NACKs: ts.nacks,
		})
	}
	return out
}
