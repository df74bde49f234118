// Package guest lets a Go function run in Nebula as a reactor: a module
// that Go initialises once per task and that answers each event in a fresh
// instance restored from the state initialisation left.
//
// Register the handler in init and build with -buildmode=c-shared:
//
//	package main
//
//	import "nebula.dev/nebula/guest"
//
//	func init() {
//		guest.Handle(func(e *guest.Event) (*guest.Reply, error) {
//			return &guest.Reply{Data: e.Data}, nil
//		})
//	}
//
//	func main() {} // required by the build, never called
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o fn.wasm .
//	nebula build fn.wasm --function -t localhost/nebula/fn:v1 -o fn.tar
//
// The package exports nebula_handle and imports nebula_v1.event_env, the
// two names of Nebula's reactor ABI, which any language with a WASI reactor
// can implement (see the README's "Reactors" section):
//
//   - the event's data is the instance's stdin and the reply's data its
//     stdout, as for a command module;
//   - the event's attributes (CE_*) or, for a plain HTTP request, its CGI
//     variables are returned by event_env, not put in the environment;
//   - nebula_handle returns the invocation's exit status: 0 is success.
//
// # Notes
//
//   - Everything init computed is computed once per task and then repeated
//     in every event: package-level variables start each event with the
//     values init gave them, whatever an earlier event changed. That
//     includes the Go runtime's map hash seed and math/rand's generators,
//     so map iteration order and math/rand sequences repeat from event to
//     event. Use crypto/rand for anything that must not repeat: it asks the
//     host for fresh bytes every time.
//   - The handler also runs once at task start, after init, on an empty
//     Event (no attributes, no data): the host's warm-up call, so that the
//     snapshot holds a Go runtime that has already served an event. What it
//     writes and any error or panic are discarded. State it leaves in
//     package variables is in every event.
//   - os.Getenv returns the task's environment as it was during init; read
//     per-event values from the Event.
//   - Files opened during init are not open in an event.
package guest
