package wasmhost

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// linearMemory backs an instance's linear memory with a mapping of its own,
// outside the Go heap, and enforces the memory limit.
//
// Allocate reserves address space for the most the instance may ever have
// (the smaller of the limit and the module's maximum) with
// mmap(PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE); growing makes
// pages readable and writable (mprotect) in place, so the memory never moves
// and growth never holds an old and a new copy at once; the kernel supplies
// a physical page when the guest first touches it. Free, when the memory is
// reused (function mode), resets what the instance could have touched (see
// reset): the next instance reads zeros, and an idle slot keeps at most
// residentMax bytes. Otherwise Free unmaps.
//
// wazero's refusal to grow past WithMemoryLimitPages leaves no trace, so
// the limit is enforced here instead, and recorded (see docs/rationale.md).
type linearMemory struct {
	limit   uint64 // bytes
	refused bool
	reuse   bool

	region    []byte          // the reservation, PROT_NONE beyond committed
	committed uint64          // bytes of region that are readable and writable
	size      uint64          // the guest's current memory size
	dirty     uint64          // the most the current instance ever had: what it could have touched
	cleanup   runtime.Cleanup // unmaps region if the linearMemory is dropped
	heap      []byte          // the memory when region could not be reserved

	// snap, for a reactor's instances, is the snapshot mapped copy-on-write
	// at the start of region (see mapSnapshot); mapped says it is.
	snap   *snapshot
	mapped bool
}

// mmap is syscall.Mmap; tests replace it.
var mmap = syscall.Mmap

// Allocate implements experimental.MemoryAllocator. One linearMemory backs
// one instance at a time, which has at most one memory.
func (m *linearMemory) Allocate(_, max uint64) experimental.LinearMemory {
	m.refused = false
	want := pageAlign(min(max, m.limit))
	if uint64(len(m.region)) < want || (!m.reuse && m.region != nil) {
		m.unmap()
		if want > 0 {
			// Should there be no address space left, the instance gets
			// Go heap memory, as without an allocator (see Reallocate).
			_ = m.reserve(want)
		}
	}
	if m.snap != nil && !m.mapped && m.region != nil {
		if err := m.mapSnapshot(); err != nil {
			m.unmap() // the instance gets empty heap memory: Invoke fails it
		}
	}
	m.size, m.dirty = 0, 0
	return m
}

// mapSnapshot maps the snapshot's memory file over the start of region,
// private and writable: the guest reads the snapshot's pages and its
// writes go to private copies, which reset drops.
func (m *linearMemory) mapSnapshot() error {
	n := m.snap.size
	if n == 0 {
		m.mapped = true
		return nil
	}
	if n > uint64(len(m.region)) {
		return fmt.Errorf("snapshot of %d bytes above the memory's %d", n, len(m.region))
	}
	if m.snap.copy != nil {
		if end := pageAlign(n); end > m.committed {
			if err := syscall.Mprotect(m.region[m.committed:end], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
				return err
			}
			m.committed = end
		}
		copy(m.region, m.snap.copy)
		m.mapped = true
		return nil
	}
	_, err := mmapFixed(unsafe.Pointer(unsafe.SliceData(m.region)), n,
		syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_FIXED, m.snap.fd)
	if err != nil {
		return fmt.Errorf("mapping the snapshot: %w", err)
	}
	m.committed, m.mapped = max(m.committed, n), true
	return nil
}

// mmapFixed maps fd at addr, which must be in a mapping of ours.
func mmapFixed(addr unsafe.Pointer, n uint64, prot, flags, fd int) (uintptr, error) {
	r, _, errno := syscall.Syscall6(syscall.SYS_MMAP, uintptr(addr), uintptr(n), uintptr(prot), uintptr(flags), uintptr(fd), 0)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// reserve maps n bytes of address space, inaccessible and unbacked.
func (m *linearMemory) reserve(n uint64) error {
	b, err := mmap(-1, 0, int(n), syscall.PROT_NONE,
		syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("reserving %d bytes of address space: %w", n, err)
	}
	m.region, m.committed = b, 0
	m.cleanup = runtime.AddCleanup(m, func(b []byte) { syscall.Munmap(b) }, b)
	return nil
}

// Reallocate implements experimental.LinearMemory. The returned slice
// always starts at the same address: wazero requires it only of shared
// memories, but it is what keeps growth from copying.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused = true
		return nil
	}
	if m.region == nil {
		return m.growHeap(size)
	}
	if size > uint64(len(m.region)) {
		return nil // past the module's maximum: wazero checks it first
	}
	if end := pageAlign(size); end > m.committed {
		if err := syscall.Mprotect(m.region[m.committed:end], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			return nil
		}
		m.committed = end
	}
	m.size = size
	m.dirty = max(m.dirty, size)
	return m.region[:size:size]
}

// growHeap backs the memory with a Go slice, as wazero does without an
// allocator, when no address space could be reserved: wazero has no way to
// fail an instantiation from the allocator.
func (m *linearMemory) growHeap(size uint64) []byte {
	if size > uint64(cap(m.heap)) {
		m.heap = append(m.heap[:cap(m.heap)], make([]byte, size-uint64(cap(m.heap)))...)
	}
	m.heap = m.heap[:size]
	m.size = size
	return m.heap
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	if !m.reuse {
		m.unmap()
		return
	}
	m.reset()
}

// residentMax is how much of its memory a slot keeps resident between
// invocations, cleared: faulting pages in again costs more than clearing
// them (BenchmarkInvoke), and a typical guest uses less.
const residentMax = 8 << 20

// reset prepares the memory for the next instance: it clears the first
// residentMax bytes the instance could have touched, and gives the rest
// back to the kernel, which supplies zeros when they are touched again.
func (m *linearMemory) reset() {
	m.heap = nil
	n := pageAlign(m.dirty)
	if m.snap != nil {
		m.resetSnapshot(n)
		return
	}
	keep := min(n, residentMax)
	clear(m.region[:keep])
	if n > keep {
		if err := syscall.Madvise(m.region[keep:n], syscall.MADV_DONTNEED); err != nil {
			// Never hand one guest's data to the next.
			m.unmap()
		}
	}
	m.size, m.dirty = 0, 0
}

// resetSnapshot returns the first n bytes of a reactor's memory to the
// snapshot. Past the snapshot's size, MADV_DONTNEED gives the pages back:
// the next instance reads zeros. Within it, the pages the instance wrote
// are private copies of the snapshot's file; PAGEMAP_SCAN lists them, and
// they are copied back from the snapshot and kept, so that the next
// instance writes them without a fault (a copy-on-write fault costs more
// than copying the page back: docs/rationale.md). Once more than
// keptMax bytes are kept, or without PAGEMAP_SCAN, MADV_DONTNEED drops
// them all instead and the file's pages show through again. Either way
// the cost is in the pages the instances touched, not the memory's size.
func (m *linearMemory) resetSnapshot(n uint64) {
	if c := m.snap.copy; c != nil && m.region != nil {
		// A small snapshot: copy it back, clear what is past it.
		copy(m.region, c)
		if n > uint64(len(c)) {
			clear(m.region[len(c):min(n, residentMax)])
			if n > residentMax {
				if err := syscall.Madvise(m.region[residentMax:n], syscall.MADV_DONTNEED); err != nil {
					m.unmap()
				}
			}
		}
		m.size, m.dirty = 0, 0
		return
	}
	m.size, m.dirty = 0, 0
	if m.region == nil {
		return
	}
	snapN := m.snap.size
	if n > snapN {
		if err := syscall.Madvise(m.region[snapN:n], syscall.MADV_DONTNEED); err != nil {
			m.unmap() // never hand one event's data to the next
			return
		}
	}
	if err := m.restoreWritten(); err != nil {
		if err := syscall.Madvise(m.region[:snapN], syscall.MADV_DONTNEED); err != nil {
			m.unmap()
		}
	}
}

// restoreKept returns the memory of a kept instance (see keptInstance),
// which still has the snapshot's size, to the snapshot, as resetSnapshot
// does, and forgets a refused growth, as Allocate does; false if it could
// not.
func (m *linearMemory) restoreKept() bool {
	m.refused = false
	if m.snap == nil || m.size != m.snap.size {
		return false
	}
	if m.snap.size == 0 {
		return true
	}
	if m.region == nil || !m.mapped {
		return false
	}
	if c := m.snap.copy; c != nil {
		copy(m.region, c)
		return true
	}
	if m.restoreWritten() == nil {
		return true
	}
	return syscall.Madvise(m.region[:m.snap.size], syscall.MADV_DONTNEED) == nil
}

// keptMax bounds the private pages resetSnapshot keeps, per slot. A
// variable for tests.
var keptMax uint64 = 4 << 20

// restoreWritten copies the snapshot back over the private pages within
// the snapshot's size; an error means they must be dropped instead.
func (m *linearMemory) restoreWritten() error {
	f := pagemap()
	if f == nil || m.snap.view == nil {
		return errNoScan
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(m.region)))
	start, end := base, base+uintptr(m.snap.size)
	var vec [64]pageRegion
	var kept uint64
	for start < end {
		n, walkEnd, err := scanPrivate(f, start, end, vec[:])
		if err != nil {
			return err
		}
		for _, r := range vec[:n] {
			lo, hi := uintptr(r.start)-base, uintptr(r.end)-base
			copy(m.region[lo:hi], m.snap.view[lo:hi])
			kept += uint64(hi - lo)
		}
		if kept > keptMax {
			return errTooManyKept
		}
		if walkEnd <= start {
			break
		}
		start = walkEnd
	}
	return nil
}

var (
	errNoScan      = errors.New("no PAGEMAP_SCAN")
	errTooManyKept = errors.New("too many private pages")
)

// unmap releases the reservation.
func (m *linearMemory) unmap() {
	m.heap = nil
	m.mapped = false
	if m.region == nil {
		return
	}
	m.cleanup.Stop()
	syscall.Munmap(m.region)
	m.region, m.committed, m.size, m.dirty = nil, 0, 0, 0
}

// osPageSize is the kernel's page size, the granularity of mprotect and
// madvise.
var osPageSize = uint64(syscall.Getpagesize())

func pageAlign(n uint64) uint64 {
	return (n + osPageSize - 1) &^ (osPageSize - 1)
}

// regionAddr is the address the memory starts at, for tests.
func (m *linearMemory) regionAddr() uintptr {
	if m.region == nil {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(m.region)))
}

// MemoryNeeds is what an instance of wasm needs of the host's memory, for a
// memory budget: its minimum linear memory, and the most its tables can
// take once their growth is bounded (see TableElementsMax), in bytes; and
// code, the size of its compiled code, which the host loads once.
//
// The shim plans a task's memory before the module is compiled (the
// compile runs in the task's cgroups, after runc has created it), so code
// is an estimate from the module's size, CompiledSizeEstimate; a compiled
// entry already in cacheDir counts instead when it is larger. wasm must be
// a module Check accepts.
func MemoryNeeds(wasm []byte, cacheDir string) (minMemory, tables, code uint64, err error) {
	info, err := parseModule(wasm)
	if err != nil {
		return 0, 0, 0, err
	}
	minMemory, tables, code = info.memoryNeeds(len(wasm), cacheDir)
	return minMemory, tables, code, nil
}

// PreflightNeeds is Preflight(wasm, cfg) followed, if it passes, by
// MemoryNeeds(wasm, cacheDir), parsing wasm once.
func PreflightNeeds(wasm []byte, cfg Config, cacheDir string) (minMemory, tables, code uint64, err error) {
	info, err := preflight(wasm, cfg)
	if err != nil {
		return 0, 0, 0, err
	}
	minMemory, tables, code = info.memoryNeeds(len(wasm), cacheDir)
	return minMemory, tables, code, nil
}

// PreflightCached is PreflightNeeds(wasm, cfg, cacheDir) for a module
// whose SHA-256 is sum, which also reports whether cacheDir holds a
// verified entry for this build of wazero (hit), which a Host configured
// WithCacheDir(cacheDir) would load rather than compile. It does not wait:
// while a CompileToCache is in progress on cacheDir it reports no hit.
//
// When cacheDir's entry was written by CompileToCache for this very module
// with this build of wasmhost (its verified prepared file names both), the
// module passed every check of the module alone then, and the parse skips
// what only those checks need (the function bodies, the vector counts, the
// data segments); the checks that depend on cfg, such as the memory
// minimum, are made as always. sum must be the SHA-256 of wasm.
func PreflightCached(wasm []byte, sum [sha256.Size]byte, cfg Config, cacheDir string) (minMemory, tables, code uint64, hit bool, err error) {
	entry := lookupIdleEntry(cacheDir, sum)
	info, err := parseModuleVouched(wasm, entry.vouches(), false)
	if err == nil {
		err = info.check(cfg)
	}
	if err != nil {
		return 0, 0, 0, false, err
	}
	minMemory, tables, code = info.memoryNeeds(len(wasm), cacheDir)
	return minMemory, tables, code, entry.compiled(), nil
}

func (m *moduleInfo) memoryNeeds(size int, cacheDir string) (minMemory, tables, code uint64) {
	for _, mem := range m.memories {
		minMemory = max(minMemory, uint64(mem.min)*PageSize)
	}
	tables, code = m.tableBytes(), CompiledSizeEstimate(size)
	if cacheDir == "" {
		return minMemory, tables, code
	}
	entries, err := listEntries(cacheDir)
	if err != nil {
		return minMemory, tables, code // no entry yet: the estimate
	}
	var compiled uint64
	for _, e := range entries {
		if e == preparedName {
			continue // a module's bytes, not compiled code
		}
		if fi, err := os.Stat(filepath.Join(cacheDir, filepath.FromSlash(e))); err == nil && fi.Mode().IsRegular() {
			compiled += uint64(fi.Size())
		}
	}
	return minMemory, tables, max(code, compiled)
}

// CompiledSizeEstimate is how large wazero's compiled code for a module of
// n bytes is expected to be: 4n + 64 KiB. Measured with wazero v1.11.0 on
// amd64, compiled over module size: 3.8 for the 3 MB Go probe, 3.9 for the
// 3.5 MB Go escape suite, 3.3–4.2 for small WAT modules (under 1 KiB).
func CompiledSizeEstimate(n int) uint64 { return 4*uint64(n) + 64<<10 }

// memoryOf returns mod's linear memory, or nil if it has none.
//
// # Notes
//
// wazero's Module.Memory returns a nil *MemoryInstance in a non-nil
// api.Memory for a module without a memory, whose methods panic.
func memoryOf(mod api.Module) api.Memory {
	m := mod.Memory()
	if m == nil || reflect.ValueOf(m).IsNil() {
		return nil
	}
	return m
}
