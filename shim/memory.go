package shim

import (
	"nebula.dev/nebula/oci"
	"nebula.dev/nebula/wasmhost"
)

// moduleMemory is what a compiled module needs of the task's memory budget,
// for oci.Rewrite's plan (oci.PlanMemory). wasm has passed CompileToCache
// into cacheDir, so it parses; should reading the cache fail, the compiled
// code is left out of the host's reserve and the rest still counts.
func moduleMemory(wasm []byte, cacheDir string) oci.ModuleMemory {
	minMemory, tables, code, _ := wasmhost.MemoryNeeds(wasm, cacheDir)
	return oci.ModuleMemory{MinMemory: minMemory, Tables: tables, Code: code, Size: uint64(len(wasm))}
}
