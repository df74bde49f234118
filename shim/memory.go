package shim

import (
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// preflightModule checks what needs no compiling (wasmhost.Preflight, with
// the task's memory limit) and returns what the module needs of the task's
// memory budget, for oci.Rewrite's plan (oci.PlanMemory), parsing wasm
// once. Its compiled code is estimated (wasmhost.MemoryNeeds), since the
// compile runs after the plan, unless cacheDir holds it.
func preflightModule(wasm []byte, knobs oci.Knobs, cacheDir string) (oci.ModuleMemory, error) {
	cfg := wasmhost.NewConfig()
	if knobs.MemoryLimit > 0 {
		cfg = cfg.WithMemoryLimit(knobs.MemoryLimit)
	}
	minMemory, tables, code, err := wasmhost.PreflightNeeds(wasm, cfg, cacheDir)
	if err != nil {
		return oci.ModuleMemory{}, err
	}
	return oci.ModuleMemory{MinMemory: minMemory, Tables: tables, Code: code, Size: uint64(len(wasm))}, nil
}
