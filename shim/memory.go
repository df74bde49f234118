package shim

import (
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// moduleMemory is what a module needs of the task's memory budget, for
// oci.Rewrite's plan (oci.PlanMemory). wasm has passed the preflight, so it
// parses; its compiled code is estimated (wasmhost.MemoryNeeds), since the
// compile runs after the plan.
func moduleMemory(wasm []byte, cacheDir string) oci.ModuleMemory {
	minMemory, tables, code, _ := wasmhost.MemoryNeeds(wasm, cacheDir)
	return oci.ModuleMemory{MinMemory: minMemory, Tables: tables, Code: code, Size: uint64(len(wasm))}
}
