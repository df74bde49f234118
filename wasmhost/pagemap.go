package wasmhost

import (
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// The kernel's PAGEMAP_SCAN interface (Linux 6.7): an ioctl on
// /proc/self/pagemap that lists the pages of a range by category.
const (
	pagemapScan = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)

	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
)

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages uint64
	categoryInverted, categoryMask, categoryAnyofMask       uint64
	returnMask                                              uint64
}

// pageRegion is struct page_region.
type pageRegion struct{ start, end, categories uint64 }

// pagemap is /proc/self/pagemap, opened once; nil if it cannot be, or the
// kernel has no PAGEMAP_SCAN.
var pagemap = sync.OnceValue(func() *os.File {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	var vec [1]pageRegion
	b := make([]byte, osPageSize)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if _, _, err := scanPrivate(f, start, start+uintptr(len(b)), vec[:]); err != nil {
		f.Close()
		return nil
	}
	return f
})

// scanPrivate lists the pages in [start, end) that are in memory or in
// swap and are not pages of a file: in a private mapping of a file, the
// pages written since they were mapped (a copy-on-write fault replaced
// them). It fills vec with runs of such pages and returns how many, and
// the address it stopped at (end, unless vec was full).
func scanPrivate(f *os.File, start, end uintptr, vec []pageRegion) (n int, walkEnd uintptr, err error) {
	arg := pmScanArg{
		start: uint64(start), end: uint64(end),
		vec: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(vec)))), vecLen: uint64(len(vec)),
		categoryMask: pageIsFile, categoryInverted: pageIsFile,
		categoryAnyofMask: pageIsPresent | pageIsSwapped,
		returnMask:        pageIsPresent | pageIsSwapped | pageIsFile,
	}
	arg.size = uint64(unsafe.Sizeof(arg))
	r, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		return 0, 0, errno
	}
	return int(r), uintptr(arg.walkEnd), nil
}
