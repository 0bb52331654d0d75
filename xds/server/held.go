package server

import "github.com/prisma-systems/xspace-mesh/internal/shrink"

// heldNames are the names one stream subscribes to of one type.
//
// Names that exist are bounded by the registry (a stream can hold every VIP
// at most once). Names that do not are not: a typo, a generated name or a
// hostile client can make up any number, and Envoy never unsubscribes one
// (envoyproxy/envoy issue #25924). So a stream holds at most
// Options.MaxUnknownNames names of a type that did not exist when it
// subscribed; past that the server stops tracking one (Server.update), and
// the stream itself is never refused for it.
type heldNames struct {
	names map[string]heldName
	peak  int // for shrink.Map of names
	// unknown counts the names held with heldName.unknown set.
	unknown int
	// order lists the unknown names oldest first. An entry whose name has
	// since been dropped, found or subscribed again (another seq) is stale:
	// skipped at the front, and removed by compact.
	order []orderEntry
	seq   uint64
}

// heldName is one held name: the sequence number it was added with, and
// two flags, in one word (a map entry of a name that every stream holds
// costs 8 bytes less than with a struct).
type heldName uint64

const (
	// heldRef says the name holds a resolver reference, given back on
	// release.
	heldRef heldName = 1 << iota
	// heldUnknown says it did not exist when subscribed and has not been
	// seen to exist since.
	heldUnknown
	heldFlags = 2 // bits below the sequence number
)

func newHeldName(seq uint64, ref, unknown bool) heldName {
	n := heldName(seq << heldFlags)
	if ref {
		n |= heldRef
	}
	if unknown {
		n |= heldUnknown
	}
	return n
}

func (n heldName) seq() uint64     { return uint64(n >> heldFlags) }
func (n heldName) ref() bool       { return n&heldRef != 0 }
func (n heldName) unknown() bool   { return n&heldUnknown != 0 }
func (n heldName) known() heldName { return n &^ heldUnknown }

type orderEntry struct {
	name string
	seq  uint64
}

func newHeldNames() *heldNames { return &heldNames{names: map[string]heldName{}} }

func (h *heldNames) holds(name string) bool {
	_, ok := h.names[name]
	return ok
}

// add records a newly held name.
func (h *heldNames) add(name string, found, ref bool) {
	h.seq++
	h.names[name] = newHeldName(h.seq, ref, !found)
	h.names = shrink.Map(h.names, &h.peak)
	if !found {
		h.unknown++
		h.order = append(h.order, orderEntry{name, h.seq})
		h.compact()
	}
}

// remove forgets a name; it reports whether it held a resolver reference.
func (h *heldNames) remove(name string) (ref bool) {
	n, ok := h.names[name]
	if !ok {
		return false
	}
	delete(h.names, name)
	h.names = shrink.Map(h.names, &h.peak)
	if n.unknown() {
		h.unknown--
	}
	return n.ref()
}

// live reports whether an order entry still stands for an unknown name.
func (h *heldNames) live(e orderEntry) bool {
	n, ok := h.names[e.name]
	return ok && n.unknown() && n.seq() == e.seq
}

// overLimit returns the oldest unknown name while more than limit are
// held, and takes it off the front. exists is asked first whether the name
// has appeared since it was subscribed: such a name no longer counts, and
// the next one is considered.
func (h *heldNames) overLimit(limit int, exists func(string) bool) (string, bool) {
	defer h.compact()
	for h.unknown > limit && len(h.order) > 0 {
		e := h.order[0]
		h.order = h.order[1:]
		if !h.live(e) {
			continue
		}
		if exists(e.name) {
			h.names[e.name] = h.names[e.name].known()
			h.unknown--
			continue
		}
		return e.name, true
	}
	return "", false
}

// compact drops the stale entries of order once they outnumber the live
// ones, so that order stays within about twice the unknown names held.
func (h *heldNames) compact() {
	if len(h.order) <= 2*h.unknown+16 {
		return
	}
	live := make([]orderEntry, 0, h.unknown)
	for _, e := range h.order {
		if h.live(e) {
			live = append(live, e)
		}
	}
	h.order = live
}
