package server

import "context"

// What the tests of package server_test need of the package's internals.

const (
	MaxNameBytes = maxNameBytes
	MaxNodeBytes = maxNodeBytes
)

// TypeLabel is typeLabel, the metric label of a type URL.
func TypeLabel(typeURL string) string { return typeLabel(typeURL) }

// SetAdmissionTokens replaces the admission rate limiter of o: a test hands
// out admissions one by one.
func SetAdmissionTokens(o *Options, t interface {
	Wait(ctx context.Context) error
	Allow() bool
},
) {
	o.tokens = t
}

// TypeIndex is typeIndex, the index of a type in a stream's per-type arrays.
func TypeIndex(typeURL string) int { return typeIndex(typeURL) }

// ServedTypes is servedTypes.
const ServedTypes = servedTypes
