package wasmhost

// Nebula's reactor ABI: the names a reactor module and the host agree on.
// A reactor is initialised once per task and every event runs in a fresh
// instance restored from the state initialisation left (see IsReactor).
const (
	// HandleExport is the function a reactor exports, of type () -> i32:
	// it handles one event and returns its exit status (0 is success).
	HandleExport = "nebula_handle"
	// InitializeExport is the WASI reactor's initialisation function,
	// called once per task if the module exports it.
	InitializeExport = "_initialize"
	// ImportModule is the module name of the host functions Nebula gives a
	// reactor.
	ImportModule = "nebula_v1"
	// EventEnvImport is the host function, of type (buf, len i32) -> i32,
	// that returns the size of the event's variables as a block of
	// NUL-terminated KEY=VALUE entries and, when len is at least that
	// size, writes the block at buf.
	EventEnvImport = "event_env"
)

// IsReactor reports whether wasm is a module built for Nebula's reactor
// ABI: one that exports a function named HandleExport. A module that
// cannot be parsed is not a reactor.
func IsReactor(wasm []byte) bool {
	info, err := parseModule(wasm)
	if err != nil {
		return false
	}
	e, ok := info.exports[HandleExport]
	return ok && e.kind == externFunc
}
