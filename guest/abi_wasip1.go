//go:build wasip1

package guest

import (
	"os"
	"unsafe"
)

//go:wasmimport nebula_v1 event_env
func eventEnv(buf unsafe.Pointer, size int32) int32

// eventBlock returns the event's variables as event_env gives them.
func eventBlock() []byte {
	n := eventEnv(nil, 0)
	if n <= 0 {
		return nil
	}
	buf := make([]byte, n)
	if eventEnv(unsafe.Pointer(&buf[0]), n) != n {
		return nil
	}
	return buf
}

//go:wasmexport nebula_handle
func nebulaHandle() int32 {
	return serve(os.Stdin, os.Stdout, os.Stderr, eventBlock())
}
