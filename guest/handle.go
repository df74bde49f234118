package guest

import (
	"fmt"
	"io"
	"runtime/debug"
)

// Handler handles one event. A returned error fails the invocation: Nebula
// answers 500 and the error goes to the task's log.
type Handler func(e *Event) (*Reply, error)

var handler Handler

// Handle registers the function's handler. Call it once, from init.
//
// # Notes
//
//   - Handle panics if called twice or with nil: a module has one handler.
func Handle(h Handler) {
	if h == nil {
		panic("guest: Handle(nil)")
	}
	if handler != nil {
		panic("guest: Handle called twice")
	}
	handler = h
}

// Exit statuses of an invocation, as nebula_handle returns them.
const (
	statusOK        = 0
	statusFailed    = 1 // the handler returned an error, or the reply was invalid
	statusPanicked  = 2 // the handler panicked (Go's own exit status for a panic)
	statusNoHandler = 3 // the module registered no handler
)

// serve runs the registered handler on one event: data read from stdin,
// variables from the event_env block, the reply to stdout, failures to
// stderr. It returns the invocation's exit status.
//
// An event without any variable is the host's warm-up call, made once
// before the snapshot (every real event has CE_* or CGI variables): the
// handler runs on it so that its code paths and the Go runtime are warm in
// the snapshot, but its output and any failure are discarded and the call
// succeeds, so that a handler that rejects an empty event does not lose
// the warm-up.
func serve(stdin io.Reader, stdout, stderr io.Writer, env []byte) (status int32) {
	if len(env) == 0 {
		defer func() {
			if status != statusNoHandler {
				status = statusOK
			}
		}()
		stdout, stderr = io.Discard, io.Discard
	}
	if handler == nil {
		fmt.Fprintln(stderr, "guest: no handler: call guest.Handle in init")
		return statusNoHandler
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "guest: reading the event's data:", err)
		return statusFailed
	}
	e := newEvent(data, env)
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(stderr, "panic: %v\n\n%s", v, debug.Stack())
			status = statusPanicked
		}
	}()
	reply, err := handler(e)
	if err == nil {
		err = reply.write(stdout, e)
	}
	if err != nil {
		fmt.Fprintln(stderr, "guest:", err)
		return statusFailed
	}
	return statusOK
}
