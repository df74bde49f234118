package wasmhost

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

func newReactorInvoker(tb testing.TB, cfg Config, name string) *ReactorInvoker {
	tb.Helper()
	mod := compile(tb, cfg, name)
	fsys, err := NewGuestFS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := NewReactorInvoker(context.Background(), mod, RunConfig{
		Args: []string{name}, Env: []string{"TASK=1"}, FS: fsys,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}

func TestReactorEcho(t *testing.T) {
	inv := newReactorInvoker(t, Config{}, functions.Reactor)
	for i, data := range []string{"hello", "", "second event"} {
		env := []string{"CE_ID=" + data, "CE_TYPE=t"}
		resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte(data), Env: env})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want := "ready " + data + "\x00" + strings.Join(env, "\x00") + "\x00"
		if got := string(resp.Stdout); got != want {
			t.Errorf("event %d: stdout %q, want %q", i, got, want)
		}
	}
}

func TestReactorWarmup(t *testing.T) {
	// reactor.wat fails an event with neither data nor variables: the
	// warm-up event fails and the snapshot is taken without it.
	if inv := newReactorInvoker(t, Config{}, functions.Reactor); inv.WarmupErr == nil || !strings.Contains(inv.WarmupErr.Error(), "status 9") {
		t.Errorf("reactor.wat: WarmupErr %v, want status 9", inv.WarmupErr)
	}
	if inv := newReactorInvoker(t, Config{}, functions.ReactorState); inv.WarmupErr != nil {
		t.Errorf("reactorstate.wat: WarmupErr %v", inv.WarmupErr)
	}
	if inv := newReactorInvoker(t, NewConfig().WithReactorWarmup(false), functions.Reactor); inv.WarmupErr != nil {
		t.Errorf("without warm-up: WarmupErr %v", inv.WarmupErr)
	}
}

func TestReactorFailures(t *testing.T) {
	inv := newReactorInvoker(t, NewConfig().WithStdoutLimit(100), functions.Reactor)
	ctx := context.Background()
	invoke := func(ctx context.Context, data string) error {
		_, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(data)})
		return err
	}
	var ee *abi.ExitError
	if err := invoke(ctx, "!"); !errors.Is(err, abi.ErrTrap) {
		t.Errorf("trap: %v, want ErrTrap", err)
	}
	if err := invoke(ctx, "%"); !errors.Is(err, abi.ErrTrap) || !strings.Contains(err.Error(), "event_env") {
		t.Errorf("event_env out of range: %v, want ErrTrap naming event_env", err)
	}
	if err := invoke(ctx, "#"); !errors.As(err, &ee) || ee.Code != 3 {
		t.Errorf("return 3: %v, want exit status 3", err)
	}
	if err := invoke(ctx, "$"); !errors.As(err, &ee) || ee.Code != 4 {
		t.Errorf("proc_exit(4): %v, want exit status 4", err)
	}
	if err := invoke(ctx, strings.Repeat("x", 200)); !errors.Is(err, abi.ErrOutputLimit) {
		t.Errorf("200 bytes out: %v, want ErrOutputLimit", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := invoke(tctx, "@"); !errors.Is(err, abi.ErrTimeout) {
		t.Errorf("loop: %v, want ErrTimeout", err)
	}
	if err := invoke(ctx, "fine"); err != nil {
		t.Errorf("after the failures: %v", err)
	}
}

// stateReport is what reactorstate.wat reports of each event.
type stateReport struct {
	Pages, G, Events, Marker, Init, Data, Fd4Errno, EnvSize uint32
	Random                                                  [16]byte
	Beyond, OpenErrno, EnvWord                              uint32
}

// TestReactorFreshState runs reactorstate.wat, which reports what it finds
// of earlier events and then leaves traces: memory below and above the
// snapshot's size, mutable globals, an open file, the event's variables.
// Without the warm-up event, every event must find the snapshot pristine;
// with it, every event must find exactly what the first one found (the
// warm-up's traces, which are part of the snapshot).
// Every way of restoring memory runs: copying a small snapshot; mapping a
// large one, its written pages copied back and kept, or dropped (over
// keptMax, or without PAGEMAP_SCAN).
func TestReactorFreshState(t *testing.T) {
	noScan := func() *os.File { return nil }
	for _, c := range []struct {
		name    string
		warmup  bool
		copyMax int
		keptMax uint64
		pagemap func() *os.File
	}{
		{"copy", false, 1 << 20, keptMax, pagemap}, {"copy/warmup", true, 1 << 20, keptMax, pagemap},
		{"map", false, 0, keptMax, pagemap}, {"map/warmup", true, 0, keptMax, pagemap},
		{"map/drop", false, 0, 0, pagemap}, {"map/noscan", false, 0, keptMax, noScan},
	} {
		warmup := c.warmup
		t.Run(c.name, func(t *testing.T) {
			defer func(c int, k uint64, p func() *os.File) { copyRestoreMax, keptMax, pagemap = c, k, p }(copyRestoreMax, keptMax, pagemap)
			copyRestoreMax, keptMax, pagemap = c.copyMax, c.keptMax, c.pagemap
			inv := newReactorInvoker(t, NewConfig().WithReactorWarmup(warmup), functions.ReactorState)
			if copied := inv.snap.copy != nil; copied != (c.copyMax > 0) {
				t.Fatalf("snapshot copied: %v, want %v", copied, c.copyMax > 0)
			}
			var first, prev stateReport
			for i := range 4 {
				env := []string{"CE_ID=event-" + strings.Repeat("x", i), "CE_SECRET=s" + string(rune('0'+i))}
				resp, err := inv.Invoke(context.Background(), &abi.Request{Env: env})
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				var r stateReport
				if err := binary.Read(bytes.NewReader(resp.Stdout), binary.LittleEndian, &r); err != nil {
					t.Fatalf("event %d: report %q: %v", i, resp.Stdout, err)
				}
				wantEnv := strings.Join(env, "\x00") + "\x00"
				want := stateReport{Pages: 2, G: 42, Events: 0, Marker: 0, Init: 0x54494e49,
					Data: 0x70616e73, Fd4Errno: 8}
				if warmup {
					want = first
				}
				if i == 0 {
					first = r
				}
				want.EnvSize, want.Random = uint32(len(wantEnv)), r.Random
				if warmup && i == 0 {
					want = r // checked below: the next events must see the same
				}
				if r != want {
					t.Errorf("event %d saw %+v, want %+v", i, r, want)
				}
				if r.Beyond != 0 || r.OpenErrno != 0 || r.EnvWord != 0 || r.Fd4Errno != 8 {
					t.Errorf("event %d: past the snapshot %#x (want 0), path_open errno %d (want 0), "+
						"variables' buffer %#x (want 0), fd 4 errno %d (want 8, EBADF)",
						i, r.Beyond, r.OpenErrno, r.EnvWord, r.Fd4Errno)
				}
				if got := string(resp.Stdout[60:]); got != wantEnv {
					t.Errorf("event %d: variables %q, want %q", i, got, wantEnv)
				}
				if i > 0 && r.Random == prev.Random {
					t.Errorf("event %d: random_get repeated event %d's bytes % x", i, i-1, r.Random)
				}
				prev = r
			}
			if mem := inv.snap.size; !warmup && mem != 2*PageSize {
				t.Errorf("snapshot of %d bytes, want 2 pages", mem)
			}
		})
	}
}

func TestReactorRunRefused(t *testing.T) {
	mod := compile(t, Config{}, functions.Reactor)
	if _, err := mod.Run(context.Background(), RunConfig{}); !errors.Is(err, ErrReactorRun) {
		t.Errorf("Run: %v, want ErrReactorRun", err)
	}
}

// goReactor is the file name of testdata/goreactor, built by buildGoReactor.
const goReactor = "goreactor.wasm"

var (
	goReactorOnce sync.Once
	goReactorErr  error
)

// needGoReactor builds testdata/goreactor into fnDir, once.
func needGoReactor(tb testing.TB) {
	tb.Helper()
	needFunctions(tb)
	goReactorOnce.Do(func() {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", filepath.Join(fnDir, goReactor), ".")
		cmd.Dir = filepath.Join("testdata", "goreactor")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			goReactorErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if goReactorErr != nil {
		tb.Fatalf("building testdata/goreactor: %v", goReactorErr)
	}
}

func TestReactorGo(t *testing.T) {
	needGoReactor(t)
	inv := newReactorInvoker(t, Config{}, goReactor)
	ctx := context.Background()
	invoke := func(data string, env ...string) string {
		t.Helper()
		resp, err := inv.Invoke(ctx, &abi.Request{Stdin: []byte(data), Env: env})
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		return string(resp.Stdout)
	}
	if got, want := invoke(`{"a":1}`, "CE_ID=1"), `{"data":{"a":1},"env":["CE_ID=1"]}`+"\n"; got != want {
		t.Errorf("echo: %q, want %q", got, want)
	}
	if got, want := invoke("hi", "CE_ID=2", "CE_TYPE=x"), `{"text":"hi","env":["CE_ID=2","CE_TYPE=x"]}`+"\n"; got != want {
		t.Errorf("echo: %q, want %q", got, want)
	}
	for range 3 {
		if got := invoke("counter"); got != "1\n" {
			t.Errorf("counter: %q, want 1: an event saw an earlier one's globals", got)
		}
	}
	// What a snapshot repeats, as the package doc says: the map hash
	// seed and math/rand's state are the same in every event.
	if a, b := invoke("maphash"), invoke("maphash"); a != b {
		t.Errorf("map iteration order differs between events (%q, %q): update the package doc", a, b)
	}
	if a, b := invoke("rand"), invoke("rand"); a != b {
		t.Errorf("math/rand differs between events (%q, %q): update the package doc", a, b)
	}
}

func TestCheckReactor(t *testing.T) {
	const handle = `(func (export "nebula_handle") (result i32) (i32.const 0))`
	tests := []struct {
		name, src string
		err       error
		msg       string // a substring of the error message
	}{
		{name: "minimal", src: `(module ` + handle + `)`},
		{name: "event_env", src: `(module (import "nebula_v1" "event_env" (func (param i32 i32) (result i32))) ` + handle + `)`},
		{name: "start section and data", src: `(module (memory 1) (data (i32.const 8) "x") (func $s) (start $s) ` + handle + `)`},
		{name: "event_env in a command", err: ErrUnsupportedImport, msg: "nebula_v1.event_env (function)",
			src: `(module (import "nebula_v1" "event_env" (func (param i32 i32) (result i32))) (func (export "_start")))`},
		{name: "event_env type", err: ErrUnsupportedImport, msg: "nebula_v1.event_env with type (i32) -> (i32), want (i32, i32) -> (i32)",
			src: `(module (import "nebula_v1" "event_env" (func (param i32) (result i32))) ` + handle + `)`},
		{name: "other nebula_v1 import", err: ErrUnsupportedImport, msg: "nebula_v1.nope (not a function of Nebula's reactor ABI)",
			src: `(module (import "nebula_v1" "nope" (func)) ` + handle + `)`},
		{name: "handle type", err: ErrInvalid, msg: `"nebula_handle" has type () -> (), want () -> (i32)`,
			src: `(module (func (export "nebula_handle")))`},
		{name: "_initialize type", err: ErrInvalid, msg: `"_initialize" has type () -> (i32), want () -> ()`,
			src: `(module (func (export "_initialize") (result i32) (i32.const 0)) ` + handle + `)`},
		{name: "passive data", err: ErrSnapshot, msg: "data segment 0 is passive",
			src: `(module (memory 1) (data "x") ` + handle + `)`},
		{name: "memory.init", err: ErrSnapshot, msg: "uses memory.init",
			src: `(module (memory 1) (data "x") (func (memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1))) ` + handle + `)`},
		{name: "data.drop", err: ErrSnapshot, msg: "uses data.drop",
			src: `(module (memory 1) (data "x") (func (data.drop 0)) ` + handle + `)`},
		{name: "data offset", err: ErrSnapshot, msg: "data segment 0 has an offset other than an i32.const",
			src: `(module (global i32 (i32.const 8)) (memory 1) (data (global.get 0) "x") ` + handle + `)`},
		{name: "table.set", err: ErrSnapshot, msg: "function 0 uses table.set",
			src: `(module (table 1 funcref) (func (table.set 0 (i32.const 0) (ref.null func))) ` + handle + `)`},
		{name: "table.grow", err: ErrSnapshot, msg: "uses table.grow",
			src: `(module (table 1 funcref) (func (drop (table.grow 0 (ref.null func) (i32.const 1)))) ` + handle + `)`},
		{name: "table.fill, copy, init, elem.drop", err: ErrSnapshot,
			msg: "uses elem.drop; function 0 uses table.copy; function 0 uses table.fill; function 0 uses table.init",
			src: `(module (table 2 funcref) (elem func $f) (func $f
				(table.fill 0 (i32.const 0) (ref.null func) (i32.const 1))
				(table.copy (i32.const 0) (i32.const 1) (i32.const 1))
				(table.init 0 (i32.const 0) (i32.const 0) (i32.const 1))
				(elem.drop 0)) ` + handle + `)`},
		{name: "reference global", err: ErrSnapshot, msg: "mutable global 0 has type 0x70",
			src: `(module (global (mut funcref) (ref.null func)) ` + handle + `)`},
		{name: "reserved export", err: ErrSnapshot, msg: `it exports "nebula.snapshot.global.0", a name the host reserves`,
			src: `(module (global (export "nebula.snapshot.global.0") i32 (i32.const 0)) ` + handle + `)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(context.Background(), wat(t, tt.src), Config{})
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Check: %v\nwant %v with %q", err, tt.err, tt.msg)
			}
		})
	}
}

// TestReactorStartAndData: the host applies the data segments, then calls
// the start function, then `_initialize`, as instantiation would.
func TestReactorStartAndData(t *testing.T) {
	wasm := wat(t, `(module
		(import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
		(memory 1)
		(data (i32.const 100) "d")
		(data (i32.const 101) "-")
		(func $start (i32.store8 (i32.const 101) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1))))
		(start $start)
		(func (export "_initialize") (i32.store8 (i32.const 102) (i32.add (i32.load8_u (i32.const 101)) (i32.const 1))))
		(func (export "nebula_handle") (result i32)
			(i32.store (i32.const 0) (i32.const 100))
			(i32.store (i32.const 4) (i32.const 3))
			(drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
			(i32.const 0)))`)
	mod, err := newHost(t, NewConfig().WithReactorWarmup(false)).Compile(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := NewReactorInvoker(context.Background(), mod, RunConfig{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := inv.Invoke(context.Background(), &abi.Request{})
	if err != nil || string(resp.Stdout) != "def" {
		t.Errorf("Invoke: %q, %v; want \"def\"", resp.Stdout, err)
	}
}

// TestReactorInitFailures: what fails in initialisation fails
// NewReactorInvoker with the reason. (Data beyond the minimum memory is
// refused before, by Compile: TestCheck.)
func TestReactorInitFailures(t *testing.T) {
	const handle = `(func (export "nebula_handle") (result i32) (i32.const 0))`
	tests := []struct{ name, src, msg string }{
		{"trap", `(module (func (export "_initialize") unreachable) ` + handle + `)`, "_initialize: guest trapped: unreachable"},
		{"proc_exit", `(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
			(func (export "_initialize") (call $e (i32.const 3))) ` + handle + `)`, "_initialize called proc_exit(3)"},
		{"start traps", `(module (func $s unreachable) (start $s) ` + handle + `)`, "the start function: guest trapped"},
		{"memory limit", `(module (memory 1) (func (export "_initialize") (if (i32.lt_s (memory.grow (i32.const 10)) (i32.const 0)) (then unreachable))) ` + handle + `)`,
			"memory limit of 131072 bytes reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mod, err := newHost(t, NewConfig().WithMemoryLimit(2*PageSize)).Compile(context.Background(), wat(t, tt.src))
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewReactorInvoker(context.Background(), mod, RunConfig{})
			if err == nil || !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "reactor initialisation: ") {
				t.Errorf("NewReactorInvoker: %v, want %q", err, tt.msg)
			}
		})
	}
	t.Run("deadline", func(t *testing.T) {
		mod, err := newHost(t, Config{}).Compile(context.Background(), wat(t, `(module (func (export "_initialize") (loop (br 0))) `+handle+`)`))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err = NewReactorInvoker(ctx, mod, RunConfig{}); !errors.Is(err, abi.ErrTimeout) {
			t.Errorf("NewReactorInvoker: %v, want ErrTimeout", err)
		}
	})
}

// TestReactorMemoryLimit: growth beyond the snapshot counts against the
// limit, and the next event is unaffected.
func TestReactorMemoryLimit(t *testing.T) {
	inv := newReactorInvoker(t, NewConfig().WithMemoryLimit(3*PageSize).WithReactorWarmup(false), functions.ReactorState)
	// reactorstate grows one page per event: 2 -> 3 fits.
	for i := range 3 {
		if _, err := inv.Invoke(context.Background(), &abi.Request{}); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	inv = newReactorInvoker(t, NewConfig().WithMemoryLimit(2*PageSize).WithReactorWarmup(false), functions.ReactorState)
	for i := range 2 {
		if _, err := inv.Invoke(context.Background(), &abi.Request{}); !errors.Is(err, abi.ErrMemoryLimit) {
			t.Errorf("event %d: %v, want ErrMemoryLimit", i, err)
		}
	}
}

// TestReactorCache: CompileToCache compiles a reactor's rewritten module,
// the one Compile loads: a cache hit.
func TestReactorCache(t *testing.T) {
	wasm := wasmFile(t, functions.Reactor)
	dir := filepath.Join(t.TempDir(), "cache")
	if _, _, err := CompileToCache(context.Background(), wasm, dir, Config{}); err != nil {
		t.Fatal(err)
	}
	mod, err := newHost(t, NewConfig().WithCacheDir(dir)).Compile(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	if !mod.CacheHit() || !mod.IsReactor() {
		t.Errorf("CacheHit %v (%s), IsReactor %v; want both", mod.CacheHit(), mod.CacheDetail(), mod.IsReactor())
	}
}

// An event variable with a NUL byte is refused, as a command's is
// (mergeEnv): in event_env's block of NUL-terminated entries it would
// become two variables, the second of the client's choosing.
func TestReactorEventVarNUL(t *testing.T) {
	inv := newReactorInvoker(t, Config{}, functions.Reactor)
	resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("x"), Env: []string{"CE_ID=a\x00FORGED=1"}})
	if !errors.Is(err, errEnvNUL) {
		t.Errorf("a NUL in a variable: %v, stdout %q; want errEnvNUL", err, resp.Stdout)
	}
	if _, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("x"), Env: []string{"CE_ID=a"}}); err != nil {
		t.Errorf("the next event: %v", err)
	}
}
