// Package abi defines Nebula's function ABI: what one invocation of a
// function receives and returns, whatever runs it.
//
// The ABI is CGI-style, like OpenFaaS's classic watchdog: the event's data is
// the guest's stdin, its attributes are CE_* environment variables, the
// guest's stdout is the reply's data and its stderr goes to the task's
// stderr. A plain HTTP request is the same with CGI/1.1's variables
// (REQUEST_METHOD, PATH_INFO, HTTP_<HEADER>, ...) instead of CE_*, and
// stdout may start with a CGI header block; to an Invoker both are a
// Request. The front door (package events) speaks HTTP and CloudEvents and
// calls an Invoker; runtimes (a fresh wasm instance, a freshly spawned
// process) implement Invoker. Neither side knows the other.
package abi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Runtime names, as used in the `runtime` label of Nebula's metrics.
const (
	RuntimeWasm    = "wasm"
	RuntimeProcess = "process"
)

// Request is one invocation.
type Request struct {
	// ID identifies the invocation in logs (the CloudEvent's id, or a
	// plain request's X-Request-Id or a new UUID).
	ID string
	// Stdin is the event's data, decoded.
	Stdin []byte
	// Env holds KEY=VALUE pairs added to the function's own environment
	// for this invocation only (the CE_* attributes or CGI's variables,
	// and TRACEPARENT/TRACESTATE).
	Env []string
	// Stderr receives the guest's stderr. Nil discards it.
	Stderr io.Writer
}

// Response is what a finished invocation produced. An Invoker returns a
// Response, with whatever timings it measured, even alongside an error.
type Response struct {
	// Stdout is the guest's standard output: the reply's data.
	Stdout []byte
	// Startup is the per-invocation cold start: instantiating the module
	// (wasm) or spawning the process until it runs (process).
	Startup time.Duration
	// Execution is the guest's run time.
	Execution time.Duration
}

// Invoker runs one invocation in a fresh instance. Implementations must be
// safe for concurrent use; the caller bounds concurrency.
type Invoker interface {
	// Runtime returns RuntimeWasm or RuntimeProcess.
	Runtime() string
	// Invoke runs req to completion or until ctx is done. When ctx is done
	// the guest must be stopped before Invoke returns.
	Invoke(ctx context.Context, req *Request) (*Response, error)
}

// Errors an Invoker returns, matched with errors.Is or errors.As.
var (
	// ErrTimeout: the invocation's deadline passed and the guest was stopped.
	ErrTimeout = errors.New("invocation timed out")
	// ErrTrap: the guest trapped (wasm) or died of a signal (process).
	ErrTrap = errors.New("guest trapped")
	// ErrMemoryLimit: the guest hit its memory limit.
	ErrMemoryLimit = errors.New("guest hit its memory limit")
	// ErrOutputLimit: the guest wrote more to stdout than the cap allows.
	ErrOutputLimit = errors.New("guest output over the limit")
)

// ExitError reports a guest that exited with a non-zero status.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("guest exited with status %d", e.Code) }
