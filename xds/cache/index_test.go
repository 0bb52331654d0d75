package cache

import (
	"slices"
	"testing"
)

func TestWatchIndex(t *testing.T) {
	x := newWatchIndex[*int]()
	a, b, c := new(int), new(int), new(int)
	got := func(key string) []*int {
		var out []*int
		x.each(key, func(w *int) { out = append(out, w) })
		slices.SortFunc(out, func(p, q *int) int { return slices.Index([]*int{a, b, c}, p) - slices.Index([]*int{a, b, c}, q) })
		return out
	}
	x.add("k", a)
	x.add("k", a) // twice: still one
	if w := got("k"); !slices.Equal(w, []*int{a}) {
		t.Fatalf("one watch: %v", w)
	}
	x.remove("k", b) // not there: nothing happens
	if w := got("k"); !slices.Equal(w, []*int{a}) {
		t.Fatalf("after removing an absent watch: %v", w)
	}
	x.add("k", b)
	x.add("k", c)
	if w := got("k"); !slices.Equal(w, []*int{a, b, c}) {
		t.Fatalf("three watches: %v", w)
	}
	// Removing while visiting, as Cache.wake does.
	x.each("k", func(w *int) { x.remove("k", w) })
	if _, ok := x.byKey["k"]; ok || len(got("k")) != 0 {
		t.Fatalf("key left after removing every watch: %v", x.byKey)
	}
	x.add("j", a)
	x.remove("j", a)
	if len(x.byKey) != 0 {
		t.Fatalf("index not empty: %v", x.byKey)
	}
}
