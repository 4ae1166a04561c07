//go:build !osediff_nolinkname

package tensor

import "unsafe"

// mallocgc is the runtime's allocator. Go has no API for memory that need
// not be zeroed; the runtime keeps this symbol reachable by linkname for
// the packages that use it (its "do not remove or change the type
// signature" list). Build with -tags osediff_nolinkname to do without.
//
//go:linkname mallocgc runtime.mallocgc
func mallocgc(size uintptr, typ unsafe.Pointer, needzero bool) unsafe.Pointer

// allocUnzeroed returns n float32 values of unspecified content, advised to
// use huge pages before anything touches them. make would zero them on the
// allocating goroutine first: on this project's VM, 128 MiB of a reused heap
// span took 150–350 ms of 4 KiB page faults there, while the other workers
// waited; unzeroed, the pages are faulted in (as huge pages) by the parallel
// kernel that writes them, or not at all where the span is still resident.
// The memory holds no pointers (typ nil), so the collector never reads it.
func allocUnzeroed(n int) []float32 {
	if n == 0 || !unzeroed {
		return Alloc(n)
	}
	s := unsafe.Slice((*float32)(mallocgc(uintptr(n)*4, nil, false)), n)
	if n*4 >= hugeMin {
		adviseHuge(s)
	}
	return s
}
