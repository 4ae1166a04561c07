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

// mapSlab returns n floats of anonymous memory mapped outside the Go heap,
// starting on a 2 MiB boundary and advised to use huge pages, and the
// function that unmaps it; nil when the mapping fails. Outside the heap,
// the memory neither raises the collector's heap goal nor the free memory
// its scavenger keeps in proportion to it.
func mapSlab(n int) ([]float32, func()) { return mapAnon(n, 0) }

// reserveSlab returns a slab the size of the machine's memory mapped
// without reserving it (MAP_NORESERVE): only the pages touched take
// memory, and a memory plan gives back those it does not keep (trimLocked).
func reserveSlab() ([]float32, func()) {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil || si.Totalram == 0 {
		return nil, nil
	}
	total := min(uint64(si.Totalram)*uint64(si.Unit), 1<<40)
	return mapAnon(int(total/4), unix.MAP_NORESERVE)
}

func mapAnon(n, flags int) ([]float32, func()) {
	const huge = 2 << 20
	b, err := unix.Mmap(-1, 0, n*4+huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|flags)
	if err != nil {
		return nil, nil
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	skip := ((start+huge-1)&^(huge-1) - start) / 4
	s := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)[skip : skip+uintptr(n) : skip+uintptr(n)]
	adviseHuge(s)
	return s, func() { _ = unix.Munmap(b) }
}
