package registry

import (
	"fmt"
	"slices"
	"strings"
)

// What proxyless gRPC clients (grpc-go's xds:/// resolver, Node's
// @grpc/grpc-js-xds) make of a VIP's policy. They are served a gRPC VIP's
// plaintext cluster with the same Cluster resource as Envoy sidecars, and a
// route of their own (xds/translate). Where a client lacks what the policy
// asks for, it is served the nearest thing it has, and ProxylessNotes says
// so; nothing here refuses a policy, because Envoy sidecars calling the
// same VIP honour all of it.

// GRPCRetryConditions are the retry conditions gRPC clients honour (gRFC
// A44): gRPC status codes. They ignore every other retry_on value.
var GRPCRetryConditions = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// MaxGRPCRetries is the most retries proxyless gRPC clients are given.
// gRFC A44 treats more than 5 attempts as 5; grpc-js does so, grpc-go's xDS
// path does not (it would make all 1+attempts), so both are capped alike.
const MaxGRPCRetries = 4

// GRPCOutlierThreshold is the failure percentage above which a gRPC VIP's
// outlier detection ejects an instance, and GRPCOutlierMinHosts how many
// instances must have had enough calls in the interval for it to look: one
// instance alone is never ejected, so its calls still have somewhere to go.
// gRPC clients implement no consecutive-5xx ejection (gRFC A50), so these,
// with consecutive_5xx as the calls an instance needs, stand in for it.
const (
	GRPCOutlierThreshold = 85
	GRPCOutlierMinHosts  = 2
)

// ProxylessFallback is the load-balancing policy a proxyless gRPC client
// uses when it has no implementation of lb: round_robin for least_request
// (grpc-js-xds has none; grpc-go does) and random (neither has it), and
// ring_hash, on the same hash_on, for maglev (neither has it). It is lb
// itself for round_robin and ring_hash, which both clients implement.
func (lb LoadBalancing) ProxylessFallback() LoadBalancing {
	switch lb {
	case LeastRequest, Random:
		return RoundRobin
	case Maglev:
		return RingHash
	}
	return lb
}

// ProxylessRetryConditions are the conditions of r that gRPC clients
// honour, in r's order.
func (r Retries) ProxylessRetryConditions() []string {
	var out []string
	for _, c := range r.On {
		if slices.Contains(GRPCRetryConditions, c) {
			out = append(out, c)
		}
	}
	return out
}

// ProxylessNotes says, a sentence each, what proxyless gRPC clients of a
// VIP get where it differs from what its policy gives Envoy sidecars. It is
// nil for a VIP they are not served (not grpc, or plaintext: false). p need
// not be normalized.
func (p Policy) ProxylessNotes() []string {
	p = p.Normalize()
	if p.Protocol != GRPC || !p.PlaintextAllowed() {
		return nil
	}
	var notes []string
	switch lb := p.LoadBalancing; lb {
	case LeastRequest:
		notes = append(notes, "load_balancing: grpc-go uses least_request; grpc-js-xds has none and uses round_robin")
	case Random, Maglev:
		notes = append(notes, fmt.Sprintf("load_balancing: gRPC clients have no %s and use %s", lb, lb.ProxylessFallback()))
	}
	if r := p.Retries; r.Attempts > 0 {
		notes = append(notes, retryNotes(r)...)
	}
	if t := p.Timeouts.Request; t > 0 {
		notes = append(notes, fmt.Sprintf("timeouts.request: gRPC clients end every call %s after it starts, streaming calls included (max_stream_duration); use 0s for a VIP with long-lived streams", t.D()))
	}
	if o := p.OutlierDetection; o != nil {
		if o.Consecutive5xx == 0 {
			notes = append(notes, "outlier_detection: with consecutive_5xx 0, gRPC clients eject only on success rate (5 or more instances with 100 calls or more in an interval)")
		} else {
			notes = append(notes, fmt.Sprintf("outlier_detection: gRPC clients have no consecutive_5xx; they, and sidecars, eject an instance that failed more than %d%% of %d calls or more in an interval, while %d or more instances had that many",
				GRPCOutlierThreshold, o.Consecutive5xx, GRPCOutlierMinHosts))
		}
	}
	return notes
}

// retryNotes explains how gRPC clients apply a retry policy with attempts.
func retryNotes(r Retries) []string {
	var notes []string
	grpc := r.ProxylessRetryConditions()
	var ignored []string
	for _, c := range r.On {
		if !slices.Contains(grpc, c) {
			ignored = append(ignored, c)
		}
	}
	switch {
	case len(grpc) == 0:
		return append(notes, fmt.Sprintf("retries.on: %s are not gRPC status codes, so gRPC clients do not retry (they retry transparently a call that never reached an instance); add unavailable to retry calls that fail with it",
			strings.Join(r.On, ", ")))
	case len(ignored) > 0:
		notes = append(notes, fmt.Sprintf("retries.on: gRPC clients retry on %s only; they ignore %s", strings.Join(grpc, ", "), strings.Join(ignored, ", ")))
	}
	if r.Attempts > MaxGRPCRetries {
		notes = append(notes, fmt.Sprintf("retries.attempts: gRPC clients retry at most %d times (%d attempts, gRFC A44)", MaxGRPCRetries, MaxGRPCRetries+1))
	}
	if r.PerTry > 0 {
		notes = append(notes, "retries.per_try_timeout: gRPC clients have none")
	}
	return notes
}
