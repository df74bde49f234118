package wasmhost

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The WASI environment is served by the host's own environ_sizes_get and
// environ_get, which replace wazero's in the wasi_snapshot_preview1 module
// of every Runtime (instantiateWASI). They read it from the call's
// context (withEnviron), not from the instance's ModuleConfig: wazero's
// WithEnv copies the whole configuration per variable, and an event's
// variables would have cost that once per variable per event — a tenth
// of the host's CPU per event for the tiny echo (docs/rationale.md).
// The environment is built only when the guest asks for it; most small
// functions never do.

// wasiErrnoFault is WASI's errno fault: an argument points outside linear
// memory.
const wasiErrnoFault = 21

// envVar is one variable of an environment.
type envVar struct{ key, kv string } // kv is "KEY=VALUE"

// errEnvNUL is the error of a variable containing a NUL byte: WASI passes
// the environment as NUL-terminated strings.
var errEnvNUL = errors.New("wasmhost: environment variable contains a NUL byte")

// mergeEnv returns vars with the KEY=VALUE entries of add applied in order,
// as a process's setenv would: a key already there keeps its position and
// takes the new value, a new key is appended. Entries with no '=' or an
// empty key are ignored; one containing NUL is an error. It takes time
// linear in the variables (an event may bring thousands).
func mergeEnv(vars []envVar, add []string) ([]envVar, error) {
	var x envIndex // a map once past linearEnvMax variables
	for _, kv := range add {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if strings.IndexByte(kv, 0) >= 0 {
			return vars, fmt.Errorf("%w: %.64q", errEnvNUL, kv)
		}
		if x.m == nil && len(vars) > linearEnvMax {
			x = newEnvIndex(vars)
		}
		x.vars = vars
		if i := x.find(k); i >= 0 {
			vars[i].kv = kv
			continue
		}
		if x.m != nil {
			x.m[k] = len(vars)
		}
		vars = append(vars, envVar{key: k, kv: kv})
	}
	return vars, nil
}

// linearEnvMax is the most variables looked up by a linear search, as a
// handful are: allocation-free, and faster than a map at that size.
const linearEnvMax = 32

func indexEnv(vars []envVar, key string) int {
	for i := range vars {
		if vars[i].key == key {
			return i
		}
	}
	return -1
}

// envIndex finds keys in vars: by a linear search, or past linearEnvMax
// variables through a map of their first positions.
type envIndex struct {
	vars []envVar
	m    map[string]int
}

func newEnvIndex(vars []envVar) envIndex {
	x := envIndex{vars: vars}
	if len(vars) > linearEnvMax {
		x.m = make(map[string]int, len(vars))
		for i := range vars {
			if _, dup := x.m[vars[i].key]; !dup {
				x.m[vars[i].key] = i
			}
		}
	}
	return x
}

// find returns the index of key, or -1.
func (x envIndex) find(key string) int {
	if x.m == nil {
		return indexEnv(x.vars, key)
	}
	if i, ok := x.m[key]; ok {
		return i
	}
	return -1
}

// environ is the environment of one invocation: the task's variables
// (shared, never modified) with the event's applied over them, laid out
// as environ_get writes it when first asked.
type environ struct {
	task  []envVar
	event []envVar // this invocation's, already merged among themselves

	built bool
	count int
	block []byte // KEY=VALUE\0 ...

	// inTask indexes task; kept from one invocation to the next, whose
	// task is the same slice (see taskIndex).
	inTask envIndex

	// vars is a reactor event's variables, not in its WASI environment
	// but behind EventEnvImport, as event_env returns them.
	vars []byte
}

// reset makes e the environment of an invocation with the event
// variables add over the task's.
func (e *environ) reset(task []envVar, add []string) error {
	e.task, e.built = task, false
	var err error
	e.event, err = mergeEnv(e.event[:0], add)
	return err
}

// release drops the references to the invocation's variables.
func (e *environ) release() {
	clear(e.event)
	e.event, e.task, e.built = e.event[:0], nil, false
}

// build lays out the variables once per invocation.
func (e *environ) build() {
	if e.built {
		return
	}
	e.built, e.count, e.block = true, 0, e.block[:0]
	inEvent, inTask := newEnvIndex(e.event), e.taskIndex()
	for _, v := range e.task {
		if i := inEvent.find(v.key); i >= 0 {
			v = e.event[i]
		}
		e.block = append(append(e.block, v.kv...), 0)
		e.count++
	}
	for _, v := range e.event {
		if inTask.find(v.key) < 0 {
			e.block = append(append(e.block, v.kv...), 0)
			e.count++
		}
	}
}

// taskIndex returns the index of e.task, made once for a slot's
// invocations: their task's variables are one slice, never modified, and
// a map of more than linearEnvMax of them made for each event cost it
// allocations and a few microseconds.
func (e *environ) taskIndex() envIndex {
	if !sameVars(e.inTask.vars, e.task) {
		e.inTask = newEnvIndex(e.task)
	}
	return e.inTask
}

// sameVars reports whether a and b are the same slice.
func sameVars(a, b []envVar) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// environKey is the context key of an invocation's *environ.
type environKey struct{}

// withEnviron returns ctx carrying e, the environment of the instance that
// runs with it.
func withEnviron(ctx context.Context, e *environ) context.Context {
	return context.WithValue(ctx, environKey{}, e)
}

// errNoEnviron is the trap of an instance started without an environment
// in its context: a bug of the host, made loud.
var errNoEnviron = errors.New("wasmhost: no environment in the call's context")

func environOf(ctx context.Context) *environ {
	e, ok := ctx.Value(environKey{}).(*environ)
	if !ok {
		panic(errNoEnviron)
	}
	e.build()
	return e
}

// environSizesGet implements WASI's environ_sizes_get(count_ptr, size_ptr).
func environSizesGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environOf(ctx)
	mem := memoryOf(mod)
	if mem == nil || !mem.WriteUint32Le(uint32(stack[0]), uint32(e.count)) ||
		!mem.WriteUint32Le(uint32(stack[1]), uint32(len(e.block))) {
		stack[0] = wasiErrnoFault
		return
	}
	stack[0] = 0
}

// environGet implements WASI's environ_get(environ_ptr, buf_ptr): a
// pointer to each variable at environ_ptr, the variables at buf_ptr.
func environGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environOf(ctx)
	ptrs, buf := uint32(stack[0]), uint32(stack[1])
	mem := memoryOf(mod)
	if mem == nil {
		stack[0] = wasiErrnoFault
		return
	}
	offsets, ok1 := mem.Read(ptrs, uint32(4*e.count))
	block, ok2 := mem.Read(buf, uint32(len(e.block)))
	if !ok1 || !ok2 {
		stack[0] = wasiErrnoFault
		return
	}
	start := 0
	for i := 0; i < e.count; i++ {
		binary.LittleEndian.PutUint32(offsets[4*i:], buf+uint32(start))
		start += bytes.IndexByte(e.block[start:], 0) + 1
	}
	copy(block, e.block)
	stack[0] = 0
}

// instantiateWASI instantiates wasi_snapshot_preview1 in r: wazero's
// functions, but the environment's from the call's context, and the
// arguments of some checked first (exportLimitedWASI).
func instantiateWASI(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	if err := exportLimitedWASI(b); err != nil {
		return err
	}
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environSizesGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("result.environc", "result.environv_len").
		Export("environ_sizes_get")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("environ", "environ_buf").
		Export("environ_get")
	_, err := b.Instantiate(ctx)
	return err
}
