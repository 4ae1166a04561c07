//go:build linux

package tensor

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHuge marks the 2 MiB-aligned interior of s as a candidate for
// transparent huge pages (MADV_HUGEPAGE). Errors are ignored: it is advice.
func adviseHuge(s []float32) {
	const huge = 2 << 20
	start := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	end := start + uintptr(len(s))*4
	lo := (start + huge - 1) &^ (huge - 1)
	hi := end &^ (huge - 1)
	if hi <= lo {
		return
	}
	all := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*4)
	_ = unix.Madvise(all[lo-start:hi-start], unix.MADV_HUGEPAGE)
}

func discard(s []float32) {
	const page = 4 << 10
	start := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	end := start + uintptr(len(s))*4
	lo := (start + page - 1) &^ (page - 1)
	hi := end &^ (page - 1)
	if hi <= lo {
		return
	}
	all := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*4)
	_ = unix.Madvise(all[lo-start:hi-start], unix.MADV_DONTNEED)
}
