// Package shrink gives a Go map back the memory it grew to. A map never
// shrinks: one that held a flood of names keeps their slots after they are
// deleted. Code that owns a map calls Map after changing it; once the map
// holds less than a quarter of the most it held, Map returns a copy sized
// to what it holds, and the old one is garbage.
package shrink

import "maps"

// minPeak is the size below which a map is never copied: small maps cost
// little, and copying them would only churn.
const minPeak = 1024

// Map returns m, or a right-sized copy of it (see the package comment).
// peak is the caller's record of the most m held since it was last copied.
// The copy costs O(len(m)) and happens only after len(m) fell to a quarter
// of the peak, so its cost is amortized over the deletes that made it due.
func Map[M ~map[K]V, K comparable, V any](m M, peak *int) M {
	n := len(m)
	if n > *peak {
		*peak = n
		return m
	}
	if *peak < minPeak || n >= *peak/4 {
		return m
	}
	*peak = n
	// Not maps.Clone: it copies the table at its grown size.
	c := make(M, n)
	maps.Copy(c, m)
	return c
}
