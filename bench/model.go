package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Default images: the fixtures that `nebula build` makes from
// test/functions (package harness imports them into its daemons under
// these names; a test holds the two lists equal).
const (
	// DefaultProbeFnImage is the Go probe as a native static executable in
	// function mode (entrypoint /probe, args ce).
	DefaultProbeFnImage = "localhost/nebula/probe-fn:latest"
	// DefaultProbeFnWasmImage is the same probe built for wasip1 (entrypoint
	// /probe.wasm, args ce).
	DefaultProbeFnWasmImage = "localhost/nebula/probe-fn-wasm:latest"
	// DefaultEchoFnWasmImage is the tiny WAT echo (entrypoint /echo.wasm).
	DefaultEchoFnWasmImage = "localhost/nebula/echo-fn-wasm:latest"
	// DefaultProbeReactorImage is the probe built as a reactor with package
	// guest (entrypoint /probe-reactor.wasm, function mode).
	DefaultProbeReactorImage = "localhost/nebula/probe-reactor:latest"
	// DefaultEchoReactorImage is the tiny echo as a WAT reactor (entrypoint
	// /echoreactor.wasm, function mode).
	DefaultEchoReactorImage = "localhost/nebula/echo-reactor:latest"
)

// Shims (containerd runtime types) under comparison.
const (
	RuncShim   = "io.containerd.runc.v2"
	NebulaShim = "io.containerd.nebula.v1"
)

// Function is the code a study calls: the same behaviour built natively
// and/or as a WebAssembly module, each packaged as an OCI image that
// follows Nebula's function ABI (the event's data on stdin, CE_* in the
// environment, the reply on stdout).
type Function struct {
	Name        string
	Description string
	// NativeImage and WasmImage name the images ("" when there is no such
	// build). Each is run in function mode or run mode by annotation.
	NativeImage, WasmImage string
	// ReactorImage names the function built as a reactor (initialised once
	// per task, each event in an instance restored from a snapshot), ""
	// without one. It only runs in function mode.
	ReactorImage string
	// EventType is the CloudEvent type sent; Data the event's data.
	EventType   string
	ContentType string
	Data        []byte
	// Echo says the reply must equal Data: a check that the study measures
	// working calls, not failures.
	Echo bool
}

// FunctionNames are the built-in functions, in report order, plus "user"
// (given with --wasm or --image).
var FunctionNames = []string{"tiny", "go", "user"}

var benchData = []byte(`{"message":"hello from nebula bench"}`)

func builtinFunction(name string) *Function {
	switch name {
	case "tiny":
		return &Function{
			Name:        "tiny",
			Description: "WAT echo module (a few hundred bytes): stdin to stdout",
			WasmImage:   DefaultEchoFnWasmImage, ReactorImage: DefaultEchoReactorImage,
			EventType: "probe.echo", ContentType: "application/json", Data: benchData, Echo: true,
		}
	case "go":
		return &Function{
			Name:        "go",
			Description: "Go probe (`probe ce`, event type probe.echo): stdin to stdout, native static and wasip1",
			NativeImage: DefaultProbeFnImage, WasmImage: DefaultProbeFnWasmImage, ReactorImage: DefaultProbeReactorImage,
			EventType: "probe.echo", ContentType: "application/json", Data: benchData, Echo: true,
		}
	}
	return nil
}

// Kind is how a cell runs its function.
type Kind int

const (
	// KindContainer creates, starts, waits for and deletes a fresh
	// container per call, through containerd.
	KindContainer Kind = iota
	// KindFrontDoor sends a CloudEvent to a function-mode task, which runs
	// it in a fresh process or wasm instance.
	KindFrontDoor
	// KindTaskStart starts a function-mode task until its front door
	// answers, then stops and deletes it.
	KindTaskStart
)

// Runtime is one way of running a function: the study's other axis.
type Runtime struct {
	ID    string // as given to --cells
	Kind  Kind
	Model string // "container per event", ...
	Label string // for tables and plots
	Shim  string
	// Wasm says the runtime runs the function's WasmImage, else its
	// NativeImage.
	Wasm bool
	// Reactor says the runtime runs the function's ReactorImage.
	Reactor bool
	// Miss gives every task a module variant never compiled before.
	Miss bool
}

// Runtimes lists every runtime, in report order.
var Runtimes = []Runtime{
	{ID: "container-runc", Kind: KindContainer, Model: "container per event", Label: "container per event (runc.v2)", Shim: RuncShim},
	{ID: "container-nebula", Kind: KindContainer, Model: "container per event", Label: "container per event (Nebula, native)", Shim: NebulaShim},
	{ID: "container-wasm", Kind: KindContainer, Model: "container per event", Label: "container per event (Nebula, wasm)", Shim: NebulaShim, Wasm: true},
	{ID: "process", Kind: KindFrontDoor, Model: "process per event", Label: "process per event", Shim: NebulaShim},
	{ID: "wasm", Kind: KindFrontDoor, Model: "wasm instance per event", Label: "wasm instance per event", Shim: NebulaShim, Wasm: true},
	{ID: "snapshot", Kind: KindFrontDoor, Model: "wasm instance per event", Label: "wasm instance per event, from a snapshot", Shim: NebulaShim, Wasm: true, Reactor: true},
	{ID: "start-native", Kind: KindTaskStart, Model: "task start", Label: "task start (native)", Shim: NebulaShim},
	{ID: "start-wasm", Kind: KindTaskStart, Model: "task start", Label: "task start (wasm, cache hit)", Shim: NebulaShim, Wasm: true},
	{ID: "start-wasm-miss", Kind: KindTaskStart, Model: "task start", Label: "task start (wasm, cache miss)", Shim: NebulaShim, Wasm: true, Miss: true},
	{ID: "start-snapshot", Kind: KindTaskStart, Model: "task start", Label: "task start (wasm reactor, cache hit)", Shim: NebulaShim, Wasm: true, Reactor: true},
}

// RuntimeIDs returns the IDs of Runtimes.
func RuntimeIDs() []string {
	ids := make([]string, len(Runtimes))
	for i, r := range Runtimes {
		ids[i] = r.ID
	}
	return ids
}

func runtimeByID(id string) (Runtime, bool) {
	for _, r := range Runtimes {
		if r.ID == id {
			return r, true
		}
	}
	return Runtime{}, false
}

// Cell is one runtime × function: a row group of the report.
type Cell struct {
	Runtime  Runtime
	Function *Function
}

// Name is "RUNTIME/FUNCTION", e.g. "container-runc/go".
func (c *Cell) Name() string { return c.Runtime.ID + "/" + c.Function.Name }

// Label is the runtime's label and the function, for plots.
func (c *Cell) Label() string { return c.Runtime.Label + ", " + c.Function.Name }

func (c *Cell) image() string {
	if c.Runtime.Reactor {
		return c.Function.ReactorImage
	}
	if c.Runtime.Wasm {
		return c.Function.WasmImage
	}
	return c.Function.NativeImage
}

// Phase is one measured interval of a call; values are in seconds.
type Phase int

const (
	// PhaseCreate: container and task created (snapshot, shim, runc
	// create; for a wasm task the shim's compile or cache check).
	PhaseCreate Phase = iota
	// PhaseStartup: until the function's code runs. Container: create and
	// start. Front door: Server-Timing "start" (instantiate / spawn until
	// running). Task start: create and start.
	PhaseStartup
	// PhaseExec: the function's run. Container: started until it exited and
	// its output was read. Front door: Server-Timing "exec".
	PhaseExec
	// PhaseReady: task start: started until the front door answered
	// /healthz.
	PhaseReady
	// PhaseTeardown: task and container deleted (snapshot removed).
	PhaseTeardown
	// PhaseQueue: front door: Server-Timing "queue", waiting for a slot.
	PhaseQueue
	// PhaseServer: front door: Server-Timing "total", request received to
	// response headers.
	PhaseServer
	// PhaseTotal: the whole call as its caller sees it. Container: create
	// to deleted. Front door: request sent to reply read (client side).
	// Task start: create to ready.
	PhaseTotal
	numPhases
)

var phaseNames = [numPhases]string{"create", "startup", "exec", "ready", "teardown", "queue", "server", "total"}

func (p Phase) String() string { return phaseNames[p] }

// Phases lists every phase in column order.
func Phases() []Phase {
	ps := make([]Phase, numPhases)
	for i := range ps {
		ps[i] = Phase(i)
	}
	return ps
}

// phaseDoc says what each phase measures, per kind of cell, for summary.md.
var phaseDoc = [numPhases]string{
	"container and task created: snapshot prepared, shim started, `runc create` (a wasm task's module compiled or its cache entry checked by the shim)",
	"until the function's code runs — container and task start: create + `runc start`; per event: Server-Timing `start` (wasm instantiation, or spawn of the process until it runs)",
	"the function's run — container: start returned → exit seen and stdout read; per event: Server-Timing `exec`",
	"task start: start returned → the front door answered `GET /healthz` 200",
	"task and container deleted, snapshot removed (task start: SIGTERM, exit, delete)",
	"per event: Server-Timing `queue`, waiting for a free instance slot (0 when calls are sequential)",
	"per event: Server-Timing `total`, request received → response headers written, inside the task",
	"the whole call as the caller sees it — container: create → deleted; per event: request sent → reply read, client side, over loopback; task start: create → ready",
}

// Record is one measured call.
type Record struct {
	Cell      *Cell
	Iteration int
	// Values holds each phase in seconds, NaN where the phase does not
	// apply.
	Values [numPhases]float64
}

func newRecord(c *Cell, iter int) Record {
	r := Record{Cell: c, Iteration: iter}
	for i := range r.Values {
		r.Values[i] = math.NaN()
	}
	return r
}

// parseList splits a comma-separated flag value, trimming blanks.
func parseList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// selectCells builds the cells of fns × runtimes (both already checked),
// skipping the combinations a function has no build for.
func selectCells(fns []*Function, runtimeIDs []string) []*Cell {
	var cells []*Cell
	for _, r := range Runtimes {
		if !slices.Contains(runtimeIDs, r.ID) {
			continue
		}
		for _, f := range fns {
			c := &Cell{Runtime: r, Function: f}
			if c.image() == "" {
				continue
			}
			cells = append(cells, c)
		}
	}
	return cells
}

func checkNames(flag string, given, valid []string) error {
	for _, g := range given {
		if !slices.Contains(valid, g) {
			return fmt.Errorf("--%s: unknown %q (want one or more of %s)", flag, g, strings.Join(valid, ", "))
		}
	}
	return nil
}
