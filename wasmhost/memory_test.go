package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"syscall"
	"testing"

	"nebula.dev/nebula/abi"
	"nebula.dev/nebula/test/functions"
)

// TestLinearMemoryInPlace: growth keeps the memory where it is, stops at
// the limit and records the refusal; a reused memory reads as zeros, both
// the part reset kept resident and the part it gave back.
func TestLinearMemoryInPlace(t *testing.T) {
	const limit = residentMax + 64*PageSize
	m := &linearMemory{limit: limit, reuse: true}
	for round := 0; round < 3; round++ {
		m.Allocate(PageSize, 1<<32)
		buf := m.Reallocate(PageSize)
		base := m.regionAddr()
		if base == 0 || len(buf) != PageSize {
			t.Fatalf("round %d: initial memory %d bytes at %#x", round, len(buf), base)
		}
		for size := uint64(2 * PageSize); size <= limit; size += 7 * PageSize {
			if buf = m.Reallocate(size); uint64(len(buf)) != size || m.regionAddr() != base {
				t.Fatalf("round %d: growing to %d: %d bytes at %#x, want the same address %#x", round, size, len(buf), m.regionAddr(), base)
			}
		}
		buf = m.Reallocate(limit)
		if !bytes.Equal(buf, make([]byte, limit)) {
			t.Fatalf("round %d: a fresh instance's memory is not all zeros", round)
		}
		for i := range buf {
			buf[i] = 0xAA
		}
		if m.refused {
			t.Fatal("refused within the limit")
		}
		if m.Reallocate(limit+PageSize) != nil || !m.refused {
			t.Fatal("grew past the limit, or did not record the refusal")
		}
		m.Free()
	}
	m.unmap()
}

// TestLinearMemoryOutsideHeap: a guest that grows its memory to the limit
// allocates (almost) nothing on the Go heap, so the garbage collector never
// holds a guest's memory, or an old copy of it.
func TestLinearMemoryOutsideHeap(t *testing.T) {
	const limit = 64 << 20
	inv := NewInvoker(compile(t, NewConfig().WithMemoryLimit(limit), functions.Memhog), RunConfig{Args: []string{functions.Memhog}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 2; i++ {
		_, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("m")})
		if !errors.Is(err, abi.ErrMemoryLimit) {
			t.Fatalf("err %v, want ErrMemoryLimit", err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
		t.Fatalf("two guests growing to %d bytes allocated %d bytes on the Go heap, want < 8 MiB", limit, d)
	}
	resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("x")})
	if err != nil || string(resp.Stdout) != "ok\n" {
		t.Fatalf("the next invocation: %q, %v", resp.Stdout, err)
	}
}

// TestMemoryNeeds: the numbers the shim's memory budget takes from a
// module and its cache entry.
func TestMemoryNeeds(t *testing.T) {
	wasm := wasmFile(t, functions.Probe)
	minMemory, tables, code, err := MemoryNeeds(wasm, sharedProbeCache(t))
	if err != nil {
		t.Fatal(err)
	}
	// Go's wasip1 modules: no memory maximum, a table without a maximum.
	if minMemory < PageSize || tables != TableElementsMax*tableElementCost || code < 1<<20 {
		t.Fatalf("min memory %d, tables %d, code %d", minMemory, tables, code)
	}
	t.Logf("probe.wasm: min memory %d, tables %d, compiled code %d bytes", minMemory, tables, code)
}

// TestLinearMemoryNoAddressSpace: when no address space can be reserved,
// instances get Go heap memory rather than crashing the host.
func TestLinearMemoryNoAddressSpace(t *testing.T) {
	mmap = func(int, int64, int, int, int) ([]byte, error) { return nil, syscall.ENOMEM }
	defer func() { mmap = syscall.Mmap }()
	inv := NewInvoker(compile(t, NewConfig().WithMemoryLimit(1<<20), functions.Memhog), RunConfig{Args: []string{functions.Memhog}})
	if _, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("m")}); !errors.Is(err, abi.ErrMemoryLimit) {
		t.Fatalf("err %v, want ErrMemoryLimit", err)
	}
	resp, err := inv.Invoke(context.Background(), &abi.Request{Stdin: []byte("x")})
	if err != nil || string(resp.Stdout) != "ok\n" {
		t.Fatalf("%q, %v", resp.Stdout, err)
	}
}
