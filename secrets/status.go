package secrets

import (
	"cmp"
	"slices"
	"time"
)

// Health states.
const (
	StateOK       = "ok"
	StateDegraded = "degraded"
)

// Health is a snapshot of the manager for /readyz. It is degraded when a
// served certificate is within the near-expiry window of its NotAfter, or a
// held identity is not served: it expired without a replacement, or its
// first issue failed (proxies wait for it). Failing renewals alone are not
// degraded while the cached certificates have time left.
type Health struct {
	// State is StateOK or StateDegraded.
	State string `json:"state"`
	// Certificates is the number of valid cached certificates.
	Certificates int `json:"certificates"`
	// NearExpiry counts served certificates within the near-expiry window.
	NearExpiry int `json:"near_expiry"`
	// Expired counts held services whose certificate expired unrenewed.
	Expired int `json:"expired"`
	// Missing counts held services whose certificate could not be issued
	// yet (retried with backoff).
	Missing int `json:"missing"`
	// Failing counts services whose last issue failed.
	Failing int `json:"failing"`
	// SoonestExpiry is the earliest NotAfter of a cached certificate.
	SoonestExpiry time.Time `json:"soonest_expiry,omitzero"`
	// LastError is one of the failing services' last error.
	LastError string `json:"last_error,omitempty"`
}

// OK reports whether no served certificate is close to expiry.
func (h Health) OK() bool { return h.State == StateOK }

// CertInfo describes one cached certificate for a debug endpoint: no key.
type CertInfo struct {
	Service   string    `json:"service"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// NextRenewal is when Run renews it (or retries after a failure).
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	// Refs is how many holders (proxy streams) hold it; 0 in grace.
	Refs       int    `json:"refs"`
	NearExpiry bool   `json:"near_expiry,omitempty"`
	Failures   int    `json:"failures,omitempty"`
	LastError  string `json:"last_error,omitempty"`
}

// Health reports whether served certificates are close to expiry.
func (m *Manager) Health() Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.healthLocked(m.now())
}

func (m *Manager) healthLocked(now time.Time) Health {
	h := Health{State: StateOK}
	for _, e := range m.entries {
		if e.failures > 0 {
			h.Failing++
			h.LastError = e.lastErr.Error()
		}
		switch {
		case e.usable(now):
			h.Certificates++
			if h.SoonestExpiry.IsZero() || e.cert.NotAfter.Before(h.SoonestExpiry) {
				h.SoonestExpiry = e.cert.NotAfter
			}
			if m.near(e, now) {
				h.NearExpiry++
			}
		case e.refs == 0:
		case e.lost || e.has:
			h.Expired++
		case e.failures > 0:
			h.Missing++
		}
	}
	if h.NearExpiry+h.Expired+h.Missing > 0 {
		h.State = StateDegraded
	}
	return h
}

// near reports whether e's certificate is within its near-expiry window.
// Only a held certificate counts: one in its grace period is not served.
func (m *Manager) near(e *entry, now time.Time) bool {
	return e.refs > 0 && !now.Before(e.cert.NotAfter.Add(-m.nearWindow(e)))
}

// Certificates lists the cached certificates, sorted by service, without
// their keys.
func (m *Manager) Certificates() []CertInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make([]CertInfo, 0, len(m.entries))
	for _, e := range m.entries {
		ci := CertInfo{Service: e.service, Refs: e.refs, Failures: e.failures}
		if e.lastErr != nil {
			ci.LastError = e.lastErr.Error()
		}
		if e.usable(now) {
			ci.Serial, ci.NotBefore, ci.NotAfter = e.cert.Serial, e.cert.NotBefore, e.cert.NotAfter
			ci.NearExpiry = m.near(e, now)
		}
		if e.refs > 0 {
			ci.NextRenewal = e.nextTry
		}
		if e.usable(now) || e.refs > 0 {
			out = append(out, ci)
		}
	}
	slices.SortFunc(out, func(a, b CertInfo) int { return cmp.Compare(a.Service, b.Service) })
	return out
}

func (m *Manager) updateGaugesLocked(now time.Time) {
	h := m.healthLocked(now)
	m.metrics.certificates.Set(float64(h.Certificates))
	m.metrics.nearExpiry.Set(float64(h.NearExpiry + h.Expired + h.Missing))
	if h.SoonestExpiry.IsZero() {
		m.metrics.soonestExpiry.Set(0)
	} else {
		m.metrics.soonestExpiry.Set(float64(h.SoonestExpiry.UnixNano()) / 1e9)
	}
}
