package shim

import (
	"crypto/sha256"

	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// preflightModule checks what needs no compiling (wasmhost.PreflightCached,
// with the task's memory limit) and returns what the module needs of the
// task's memory budget, for oci.Rewrite's plan (oci.PlanMemory), parsing
// wasm once, and whether cacheDir holds its compiled code (hit). Its
// compiled code is estimated (wasmhost.MemoryNeeds), since the compile runs
// after the plan, unless cacheDir holds it. sum is wasm's SHA-256.
func preflightModule(wasm []byte, sum [sha256.Size]byte, knobs oci.Knobs, cacheDir string) (mem oci.ModuleMemory, hit bool, err error) {
	cfg := wasmhost.NewConfig()
	if knobs.MemoryLimit > 0 {
		cfg = cfg.WithMemoryLimit(knobs.MemoryLimit)
	}
	minMemory, tables, code, hit, err := wasmhost.PreflightCached(wasm, sum, cfg, cacheDir)
	if err != nil {
		return oci.ModuleMemory{}, false, err
	}
	return oci.ModuleMemory{MinMemory: minMemory, Tables: tables, Code: code, Size: uint64(len(wasm))}, hit, nil
}
