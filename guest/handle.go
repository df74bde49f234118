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
func serve(stdin io.Reader, stdout, stderr io.Writer, env []byte) (status int32) {
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
