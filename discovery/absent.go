package discovery

// Bookkeeping of the VIPs that do not exist: which ones no stream holds,
// longest idle first, and the bound on how many are tracked at once (see
// the package comment). Everything here is called with d.mu held.

// hold counts one more stream holding v.
func (d *Discovery) hold(v *vip) {
	v.refs++
	if v.idle != nil {
		d.idleAbsent.Remove(v.idle)
		v.idle = nil
	}
}

// unhold counts one stream fewer holding v.
func (d *Discovery) unhold(v *vip) {
	v.refs--
	if v.refs > 0 {
		return
	}
	v.idleSince = d.opts.Now()
	if v.absent && !v.untracked {
		v.idle = d.idleAbsent.PushBack(v)
	}
}

// track records the outcome of one of v's lookups and, when v is absent,
// keeps the VIPs that do not exist within MaxNotFound: the ones idle
// longest are forgotten to make room, and if every one is held, v itself
// is dropped, at its first lookup only (a VIP that streams already hold is
// never dropped; it counts against the bound until they let go).
func (d *Discovery) track(v *vip, o outcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v.untracked || o.n <= v.absentAt {
		return // dropped, or this outcome or a newer one is recorded already
	}
	v.absentAt = o.n
	switch {
	case v.absent == !o.found:
	case o.found:
		v.absent = false
		d.absent--
		if v.idle != nil {
			d.idleAbsent.Remove(v.idle)
			v.idle = nil
		}
	default:
		v.absent = true
		d.absent++
		if v.refs == 0 {
			v.idleSince = d.opts.Now()
			v.idle = d.idleAbsent.PushBack(v)
		}
	}
	d.metrics.absent.Set(float64(d.absent))
	for d.absent > d.opts.MaxNotFound && d.idleAbsent.Len() > 0 {
		oldest := d.idleAbsent.Front().Value.(*vip)
		if !d.forget(oldest) {
			break // being looked up: tried again on the next call
		}
		d.metrics.absentEvicted.Inc()
	}
	if d.absent > d.opts.MaxNotFound && v.absent && !closed(v.ready) && d.forget(v) {
		v.untracked = true
		d.metrics.absentUntracked.Inc()
	}
}

// forget stops watching v and removes its resources. It does nothing, and
// reports false, while v is being looked up: its lookup would publish
// after the removal. A VIP is never forgotten twice.
func (d *Discovery) forget(v *vip) bool {
	if !v.resolveMu.TryLock() {
		return false
	}
	defer v.resolveMu.Unlock()
	if v.forgotten {
		return true
	}
	if d.vips[v.name] == v {
		delete(d.vips, v.name)
	}
	d.metrics.watched.Dec()
	if v.absent {
		d.absent--
		d.metrics.absent.Set(float64(d.absent))
	}
	if v.idle != nil {
		d.idleAbsent.Remove(v.idle)
		v.idle = nil
	}
	v.stop()
	v.forgotten = true
	d.unpublish(v)
	return true
}
