//go:build wasip1

package main

import (
	"syscall"
	"unsafe"
)

// Raw WASI calls, for routes Go's os package never takes: paths with ".."
// or a leading "/" (os cleans and joins them first), lookups without
// following symbolic links, odd open flags, other directory descriptors.

//go:wasmimport wasi_snapshot_preview1 path_open
//go:noescape
func path_open(fd int32, dirflags uint32, path unsafe.Pointer, pathLen uint32, oflags uint32, rightsBase uint64, rightsInheriting uint64, fdflags uint32, newFD unsafe.Pointer) uint32

//go:wasmimport wasi_snapshot_preview1 path_filestat_get
//go:noescape
func path_filestat_get(fd int32, flags uint32, path unsafe.Pointer, pathLen uint32, buf unsafe.Pointer) uint32

//go:wasmimport wasi_snapshot_preview1 path_readlink
//go:noescape
func path_readlink(fd int32, path unsafe.Pointer, pathLen uint32, buf unsafe.Pointer, bufLen uint32, n unsafe.Pointer) uint32

//go:wasmimport wasi_snapshot_preview1 fd_close
func fd_close(fd int32) uint32

//go:wasmimport wasi_snapshot_preview1 sock_accept
//go:noescape
func sock_accept(fd int32, flags uint32, newFD unsafe.Pointer) uint32

//go:wasmimport wasi_snapshot_preview1 fd_prestat_get
//go:noescape
func fd_prestat_get(fd int32, buf unsafe.Pointer) uint32

//go:wasmimport wasi_snapshot_preview1 fd_prestat_dir_name
//go:noescape
func fd_prestat_dir_name(fd int32, buf unsafe.Pointer, bufLen uint32) uint32

func errnoOf(e uint32) error {
	if e == 0 {
		return nil
	}
	return syscall.Errno(e)
}

func strPtr(s string) (unsafe.Pointer, uint32) {
	b := []byte(s)
	if len(b) == 0 {
		b = []byte{0}
		return unsafe.Pointer(&b[0]), 0
	}
	return unsafe.Pointer(&b[0]), uint32(len(s))
}

// rawOpen calls path_open and closes what it opened.
func rawOpen(dirFD int32, follow bool, path string, oflags uint32, fdflags uint32) error {
	p, n := strPtr(path)
	var dirflags uint32
	if follow {
		dirflags = 1 // LOOKUP_SYMLINK_FOLLOW
	}
	var fd int32
	e := path_open(dirFD, dirflags, p, n, oflags, ^uint64(0), ^uint64(0), fdflags, unsafe.Pointer(&fd))
	if e == 0 {
		fd_close(fd)
	}
	return errnoOf(e)
}

func rawStat(dirFD int32, follow bool, path string) error {
	p, n := strPtr(path)
	var flags uint32
	if follow {
		flags = 1
	}
	var buf [64]byte
	return errnoOf(path_filestat_get(dirFD, flags, p, n, unsafe.Pointer(&buf[0])))
}

func rawReadlink(dirFD int32, path string) (string, error) {
	p, n := strPtr(path)
	var buf [256]byte
	var got uint32
	e := path_readlink(dirFD, p, n, unsafe.Pointer(&buf[0]), uint32(len(buf)), unsafe.Pointer(&got))
	return string(buf[:got]), errnoOf(e)
}

func rawAccept(fd int32) error {
	var newFD int32
	e := sock_accept(fd, 0, unsafe.Pointer(&newFD))
	if e == 0 {
		fd_close(newFD)
	}
	return errnoOf(e)
}

// preopens lists the pre-opened directories' names, by descriptor.
func preopens() map[int32]string {
	names := map[int32]string{}
	for fd := int32(3); fd < 64; fd++ {
		var st [8]byte // tag u8, pad, name length u32
		if fd_prestat_get(fd, unsafe.Pointer(&st[0])) != 0 {
			continue
		}
		n := uint32(st[4]) | uint32(st[5])<<8 | uint32(st[6])<<16 | uint32(st[7])<<24
		name := make([]byte, n+1)
		fd_prestat_dir_name(fd, unsafe.Pointer(&name[0]), n)
		names[fd] = string(name[:n])
	}
	return names
}

// openDir opens a directory with path_open, relative to the root
// pre-open, and returns its descriptor.
func openDir(path string) (int32, error) {
	p, n := strPtr(path)
	var fd int32
	const rights = 1<<1 | 1<<13 | 1<<14 // FD_READ, PATH_OPEN, FD_READDIR
	e := path_open(rootFD, 1, p, n, 2 /* O_DIRECTORY */, rights, ^uint64(0), 0, unsafe.Pointer(&fd))
	return fd, errnoOf(e)
}

func closeFD(fd int32) { fd_close(fd) }
