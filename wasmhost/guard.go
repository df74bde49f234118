package wasmhost

// fdGuard follows what a reactor's kept instance does to its descriptor
// table through the files a guarded GuestFS opens: an instance may serve
// the next event only if the event closed every file it opened and
// touched none it found (see ReactorInvoker). One instance, one event at
// a time: no locking.
type fdGuard struct {
	event   uint64 // the current event's number
	open    int    // files opened during the current event, still open
	touched bool   // a file opened before the current event was closed or changed
}

// begin starts an event.
func (g *fdGuard) begin() { g.event, g.open, g.touched = g.event+1, 0, false }

// clean reports whether the event left the files as it found them.
func (g *fdGuard) clean() bool { return g.open == 0 && !g.touched }

// guarded returns a GuestFS with g's root and rules whose files report to
// guard.
func (g *GuestFS) guarded(guard *fdGuard) *GuestFS {
	c := *g
	c.guard = guard
	return &c
}
