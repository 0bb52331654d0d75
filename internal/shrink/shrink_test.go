package shrink

import (
	"runtime"
	"testing"
)

func TestMapCopiesOnlyAfterFallingToAQuarter(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range 4096 {
		m[i] = i
		m = Map(m, &peak)
	}
	if peak != 4096 {
		t.Fatalf("peak = %d after 4096 inserts, want 4096", peak)
	}
	before := m
	for i := range 3073 {
		delete(m, i)
		m = Map(m, &peak)
		if i < 3072 && !same(m, before) {
			t.Fatalf("copied after %d deletes, with %d of a peak of 4096 left", i+1, len(m))
		}
	}
	if same(m, before) {
		t.Fatalf("not copied with %d of a peak of 4096 left", len(m))
	}
	if len(m) != 1023 || peak != 1023 {
		t.Fatalf("after the copy: %d entries, peak %d; want 1023, 1023", len(m), peak)
	}
	for i := 3073; i < 4096; i++ {
		if m[i] != i {
			t.Fatalf("the copy lost key %d", i)
		}
	}
}

func TestMapLeavesSmallMapsAlone(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range 1000 {
		m[i] = i
		m = Map(m, &peak)
	}
	before := m
	for i := range 999 {
		delete(m, i)
		m = Map(m, &peak)
	}
	if !same(m, before) {
		t.Fatal("a map that never held 1024 entries was copied")
	}
}

// TestMapGivesMemoryBack: a map that held 200,000 entries and now holds
// a few keeps its memory; the copy Map makes does not.
func TestMapGivesMemoryBack(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	m := map[int][16]byte{}
	peak := 0
	for i := range 200_000 {
		m[i] = [16]byte{}
		m = Map(m, &peak)
	}
	grown := heap() - base
	for i := range 199_990 {
		delete(m, i)
		m = Map(m, &peak)
	}
	after := heap() - min(base, heap())
	if after > grown/10 {
		t.Fatalf("heap above baseline: %d B grown, %d B after shrinking to %d entries; want under a tenth", grown, after, len(m))
	}
	runtime.KeepAlive(m)
}

// same reports whether two maps are one map (a write to one shows in the other).
func same(a, b map[int]int) bool {
	const probe = -1
	a[probe] = 1
	_, ok := b[probe]
	delete(a, probe)
	return ok
}
