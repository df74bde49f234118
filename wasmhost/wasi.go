package wasmhost

import (
	"context"
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// WASI's errno values the host returns itself.
const (
	wasiErrnoInval       = 28
	wasiErrnoNameTooLong = 37
)

// maxPathLen bounds the paths a guest passes to WASI's path_* functions,
// as Linux's PATH_MAX bounds a process's: wazero copies a path and cleans
// it, two copies of whatever length the guest names, on the host's heap.
const maxPathLen = 4096

// maxPollSubscriptions bounds poll_oneoff's subscriptions, as Linux's
// RLIMIT_NOFILE bounds poll's descriptors: wazero allocates for each one
// on the host's heap, which a guest's memory of them would overrun.
const maxPollSubscriptions = 4096

// wasiLimits names the WASI functions whose arguments the host checks
// before wazero's implementation runs: for each, the indexes of its
// (pointer, length) pairs of paths.
var wasiLimits = map[string][]int{
	"path_create_directory":   {1},
	"path_filestat_get":       {2},
	"path_filestat_set_times": {2},
	"path_link":               {2, 5},
	"path_open":               {2},
	"path_readlink":           {1},
	"path_remove_directory":   {1},
	"path_rename":             {1, 4},
	"path_symlink":            {0, 3},
	"path_unlink_file":        {1},
	"poll_oneoff":             nil, // nsubscriptions, its third parameter
}

// wazeroWASI returns wazero's own implementations of the WASI functions,
// by name; they depend on nothing but their arguments.
var wazeroWASI = sync.OnceValues(func() (map[string]api.FunctionDefinition, error) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	b := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	cm, err := b.Compile(ctx)
	if err != nil {
		return nil, err
	}
	return cm.ExportedFunctions(), nil
})

// exportLimitedWASI adds to b, over wazero's, the functions of wasiLimits:
// wazero's, after a check of their arguments.
func exportLimitedWASI(b wazero.HostModuleBuilder) error {
	defs, err := wazeroWASI()
	if err != nil {
		return fmt.Errorf("wasmhost: wazero's WASI functions: %w", err)
	}
	for name, paths := range wasiLimits {
		def, ok := defs[name]
		if !ok {
			return fmt.Errorf("wasmhost: wazero has no WASI function %s", name)
		}
		inner, ok := def.GoFunction().(api.GoModuleFunction)
		if !ok {
			return fmt.Errorf("wasmhost: wazero's WASI function %s is a %T", name, def.GoFunction())
		}
		var f api.GoModuleFunc
		if name == "poll_oneoff" {
			f = func(ctx context.Context, mod api.Module, stack []uint64) {
				if uint32(stack[2]) > maxPollSubscriptions {
					stack[0] = wasiErrnoInval
					return
				}
				inner.Call(ctx, mod, stack)
			}
		} else {
			f = func(ctx context.Context, mod api.Module, stack []uint64) {
				for _, i := range paths {
					if uint32(stack[i+1]) > maxPathLen {
						stack[0] = wasiErrnoNameTooLong
						return
					}
				}
				inner.Call(ctx, mod, stack)
			}
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(f, def.ParamTypes(), def.ResultTypes()).
			WithParameterNames(def.ParamNames()...).
			Export(name)
	}
	return nil
}
