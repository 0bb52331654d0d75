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

// SyncIndex is syncIndex, the index of a type's sync entry of a stream.
func SyncIndex(typeURL string) int { return syncIndex(typeURL) }
