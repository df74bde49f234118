package wasmhost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// memoryModule is (module (memory 1)).
var memoryModule = []byte{0, 'a', 's', 'm', 1, 0, 0, 0, 5, 3, 1, 0, 1}

// TestEnvironLayout calls environ_sizes_get and environ_get as a guest
// would, with the buffers anywhere in memory, at its very end, and past it.
func TestEnvironLayout(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod, err := r.Instantiate(ctx, memoryModule)
	if err != nil {
		t.Fatal(err)
	}
	var e environ
	task, _ := mergeEnv(nil, []string{"A=1", "B=2"})
	if err := e.reset(task, []string{"C=3", "A=x"}); err != nil {
		t.Fatal(err)
	}
	ctx = withEnviron(ctx, &e)
	stack := []uint64{8, 12}
	environSizesGet(ctx, mod, stack)
	count, _ := mod.Memory().ReadUint32Le(8)
	size, _ := mod.Memory().ReadUint32Le(12)
	if stack[0] != 0 || count != 3 || size != 12 {
		t.Fatalf("sizes: errno %d, count %d, size %d; want 0, 3, 12", stack[0], count, size)
	}
	stack = []uint64{100, 200}
	environGet(ctx, mod, stack)
	ptrs, _ := mod.Memory().Read(100, 12)
	block, _ := mod.Memory().Read(200, size)
	if stack[0] != 0 || string(block) != "A=x\x00B=2\x00C=3\x00" {
		t.Fatalf("environ_get: errno %d, block %q", stack[0], block)
	}
	for i, want := range []uint32{200, 204, 208} {
		if got := binary.LittleEndian.Uint32(ptrs[4*i:]); got != want {
			t.Errorf("pointer %d: %d, want %d", i, got, want)
		}
	}
	end := uint64(mod.Memory().Size())
	for _, c := range []struct {
		name  string
		fn    api.GoModuleFunc
		stack []uint64
		errno uint64
	}{
		{"sizes at the end", environSizesGet, []uint64{end - 4, end - 8}, 0},
		{"sizes past the end", environSizesGet, []uint64{end - 3, 0}, wasiErrnoFault},
		{"sizes second past the end", environSizesGet, []uint64{0, end}, wasiErrnoFault},
		{"get at the end", environGet, []uint64{end - 12, end - 12 - 12}, 0},
		{"pointers past the end", environGet, []uint64{end - 11, 0}, wasiErrnoFault},
		{"strings past the end", environGet, []uint64{0, end - 11}, wasiErrnoFault},
		{"wrapping pointer", environGet, []uint64{0xffff_fffc, 0}, wasiErrnoFault},
	} {
		c.fn(ctx, mod, c.stack)
		if c.stack[0] != c.errno {
			t.Errorf("%s: errno %d, want %d", c.name, c.stack[0], c.errno)
		}
	}
}

// TestEnvironMissing: an instance run without an environment in its
// context traps, loudly, rather than seeing an empty one.
func TestEnvironMissing(t *testing.T) {
	defer func() {
		if r := recover(); r != errNoEnviron {
			t.Fatalf("recovered %v, want errNoEnviron", r)
		}
	}()
	environSizesGet(context.Background(), nil, []uint64{0, 0})
}

func TestMergeEnv(t *testing.T) {
	vars, err := mergeEnv(nil, []string{"A=1", "B=2", "A=3", "=x", "NOEQ", "C==", "B="})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.kv)
	}
	if want := []string{"A=3", "B=", "C=="}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("%q, want %q", got, want)
	}
	if _, err := mergeEnv(nil, []string{"A=\x00"}); !errors.Is(err, errEnvNUL) {
		t.Fatalf("NUL: %v", err)
	}
}

// TestEnvironNoMemory: a module without a memory gets WASI's fault, not a
// panic in the host function.
func TestEnvironNoMemory(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod, err := r.Instantiate(ctx, wat(t, `(module)`))
	if err != nil {
		t.Fatal(err)
	}
	var e environ
	ctx = withEnviron(ctx, &e)
	for _, fn := range []api.GoModuleFunc{environSizesGet, environGet} {
		stack := []uint64{0, 0}
		fn(ctx, mod, stack)
		if stack[0] != wasiErrnoFault {
			t.Errorf("errno %d, want %d (fault)", stack[0], wasiErrnoFault)
		}
	}
}

// TestEnvironManyVariables: an event's variables are merged over the
// task's in time linear in their number, with the same result as a
// handful. An event can bring thousands (one CE_* per extension
// attribute, one HTTP_* per header); the lookups were a linear search
// each, and 500,000 variables took minutes of a core before the guest
// started, outside its deadline.
func TestEnvironManyVariables(t *testing.T) {
	const n = 500_000
	task := make([]string, 0, n/2)
	for i := range n / 2 {
		task = append(task, fmt.Sprintf("T%d=task", i))
	}
	add := make([]string, 0, n+2)
	for i := range n {
		add = append(add, fmt.Sprintf("E%d=%d", i, i))
	}
	add = append(add, "T7=event", "E3=again") // over the task's, over an earlier one
	done := make(chan *environ, 1)
	go func() {
		vars, _ := mergeEnv(nil, task)
		var e environ
		if err := e.reset(vars, add); err != nil {
			t.Error(err)
		}
		e.build()
		done <- &e
	}()
	var e *environ
	select {
	case e = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("merging 500,000 variables did not finish in 60 s")
	}
	if want := n/2 + n; e.count != want {
		t.Errorf("%d variables, want %d", e.count, want)
	}
	for _, kv := range []string{"\x00T7=event\x00", "\x00E3=again\x00", "\x00T8=task\x00", fmt.Sprintf("\x00E%d=%d\x00", n-1, n-1)} {
		if !strings.Contains("\x00"+string(e.block), kv) {
			t.Errorf("the block lacks %q", kv[1:len(kv)-1])
		}
	}
	if strings.Contains(string(e.block), "E3=3\x00") {
		t.Error("E3's first value was kept")
	}
}

// BenchmarkEnvironBuild: one event's environment laid out, with a plain
// HTTP event's 18 variables over a task's n (Kubernetes adds seven for
// each service of a namespace); reported allocations are per event.
func BenchmarkEnvironBuild(b *testing.B) {
	for _, n := range []int{8, 64} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var task, add []string
			for i := range n {
				task = append(task, fmt.Sprintf("SERVICE_%d_PORT=tcp://10.0.0.%d:80", i, i))
			}
			for i := range 18 {
				add = append(add, fmt.Sprintf("HTTP_VAR_%d=value", i))
			}
			vars, _ := mergeEnv(nil, task)
			var e environ
			b.ReportAllocs()
			for b.Loop() {
				if err := e.reset(vars, add); err != nil {
					b.Fatal(err)
				}
				e.build()
				e.release()
			}
		})
	}
}

// TestEnvironBuildAllocations: laying out an ordinary event's environment
// allocates nothing once the slot has served an event, whatever the
// number of the task's variables: their index is made once per slot, not
// per event (the task's variables never change).
func TestEnvironBuildAllocations(t *testing.T) {
	for _, n := range []int{8, 64} {
		var task, add []string
		for i := range n {
			task = append(task, fmt.Sprintf("SERVICE_%d_PORT=tcp://10.0.0.%d:80", i, i))
		}
		for i := range 18 {
			add = append(add, fmt.Sprintf("HTTP_VAR_%d=value", i))
		}
		add = append(add, "SERVICE_3_PORT=event")
		vars, _ := mergeEnv(nil, task)
		var e environ
		event := func() {
			if err := e.reset(vars, add); err != nil {
				t.Fatal(err)
			}
			e.build()
			if e.count != n+18 {
				t.Fatalf("%d variables, want %d", e.count, n+18)
			}
			e.release()
		}
		event()
		if a := testing.AllocsPerRun(100, event); a != 0 {
			t.Errorf("a task of %d variables: %.0f allocations an event, want 0", n, a)
		}
	}
}
