package vault

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/prisma-systems/xspace-mesh/internal/prom"
)

// Values of the result label.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// metrics are the Vault issuer's Prometheus collectors. They exist even
// when no Registerer is given, so the code that updates them never checks
// for nil.
type metrics struct {
	requests      *prometheus.CounterVec
	logins        *prometheus.CounterVec
	tokenRenewals *prometheus.CounterVec
	tokenExpiry   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_secrets_vault_requests_total",
			Help: "Requests to Vault's PKI mount, by operation (issue, trust_bundle) and result.",
		}, []string{"operation", "result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_secrets_vault_logins_total",
			Help: "AppRole logins to Vault, by result.",
		}, []string{"result"}),
		tokenRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xspace_secrets_vault_token_renewals_total",
			Help: "Renewals of the Vault token, by result.",
		}, []string{"result"}),
		tokenExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xspace_secrets_vault_token_expiry_timestamp_seconds",
			Help: "When the Vault token expires, as a Unix time; 0 when it does not or is not known yet.",
		}),
	}
	for _, op := range []string{opIssue, opTrustBundle} {
		for _, r := range []string{resultSuccess, resultFailure} {
			m.requests.WithLabelValues(op, r)
		}
	}
	for _, r := range []string{resultSuccess, resultFailure} {
		m.logins.WithLabelValues(r)
		m.tokenRenewals.WithLabelValues(r)
	}
	if err := prom.Register(reg, m.requests, m.logins, m.tokenRenewals, m.tokenExpiry); err != nil {
		return nil, err
	}
	return m, nil
}

func result(err error) string {
	if err != nil {
		return resultFailure
	}
	return resultSuccess
}
