package hostcmd

import (
	"fmt"
	"syscall"
	"unsafe"
)

// dropPrivileges gives up, in every thread, all capabilities and the means
// to regain any (no_new_privs): the compile parses untrusted bytes, and
// needs nothing beyond writing into the cache directory its owner (root)
// may write anyway. It needs a binary without cgo (syscall.AllThreadsSyscall).
func dropPrivileges() error {
	const prSetNoNewPrivs = 38
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	header := struct {
		version uint32
		pid     int32
	}{version: 0x20080522} // _LINUX_CAPABILITY_VERSION_3: two data words
	var data [2]struct{ effective, permitted, inheritable uint32 }
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&header)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}
