//go:build !wasip1

package main

import "syscall"

// Natively there is no WASI to call: every raw route reports ENOSYS.

func rawOpen(int32, bool, string, uint32, uint32) error { return syscall.ENOSYS }
func rawStat(int32, bool, string) error                 { return syscall.ENOSYS }
func rawReadlink(int32, string) (string, error)         { return "", syscall.ENOSYS }
func rawAccept(int32) error                             { return syscall.ENOSYS }
func preopens() map[int32]string                        { return nil }
func openDir(string) (int32, error)                     { return -1, syscall.ENOSYS }
func closeFD(int32)                                     {}
