package tensor

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// hugeMin is the size from which Alloc asks the kernel for huge pages: the
// engine's large activations are walked with strides of a whole channel
// plane (a convolution's output rows, its im2col panels), and with 4 KiB pages
// those walks miss the TLB; measured on this project's machine, a 3×3
// convolution 128→128 at 512×512 ran 1.8× faster on 2 MiB pages.
const hugeMin = 4 << 20

// Alloc returns a zeroed slice of n float32 values. Large slices are advised
// to use transparent huge pages where the OS supports it (Linux with THP in
// "madvise" or "always" mode); elsewhere this is make.
func Alloc(n int) []float32 {
	s := make([]float32, n)
	if n*4 >= hugeMin {
		adviseHuge(s)
	}
	return s
}

// Discard tells the OS that the values of s, a large buffer from Alloc that
// nothing will read again, need not be kept: its whole pages are returned
// at once (Linux), where Go would return them only after a collection and a
// scavenger pass. The buffer stays valid memory (it reads as zeros, or as
// its old values where the OS kept them) until the collector frees it. Only
// for buffers the caller owns alone; elsewhere a no-op. A buffer of a
// memory plan's slab goes back to the slab instead (see Free).
func Discard(s []float32) {
	if len(s)*4 >= hugeMin && !planRecycle(s[:cap(s)]) {
		discard(s)
	}
}

// Recycling hands large buffers whose values are dead straight to the next
// allocation that will overwrite them (AllocDirty), instead of giving their
// pages back to the OS (Discard) and having Go fault them in and zero them
// again: on this project's VM a reused 128 MiB span took its allocating
// goroutine 150–350 ms of 4 KiB page faults inside Go's zeroing, on one
// core, while the other workers waited.

var recycled struct {
	sync.Mutex
	free  [][]float32 // at full capacity, the most recently recycled last
	bytes int
}

// Recycle offers s, a large buffer from Alloc or AllocDirty that nothing
// will read or write again and that the caller owns alone, for reuse by
// AllocDirty. Small buffers are left to the collector. While the buffers
// waiting take more than limit bytes, the oldest are discarded (see
// Discard) and dropped. A buffer of a memory plan's slab (BeginPlan) goes
// back to the slab instead.
func Recycle(s []float32, limit int) {
	if cap(s)*4 < hugeMin {
		return
	}
	s = s[:cap(s)]
	if planRecycle(s) {
		return
	}
	recycled.Lock()
	defer recycled.Unlock()
	recycled.free = append(recycled.free, s)
	recycled.bytes += len(s) * 4
	for recycled.bytes > limit {
		evictLocked(0)
	}
}

// evictLocked discards and drops waiting buffer i.
func evictLocked(i int) {
	s := recycled.free[i]
	discard(s)
	recycled.bytes -= len(s) * 4
	recycled.free = slices.Delete(recycled.free, i, i+1)
}

// AllocDirty returns a slice of n float32 values whose contents are
// unspecified: for outputs written in full before they are read. A large
// one reuses a recycled buffer that fits (n to n+n/8 values; the smallest)
// when there is one. A miss means the sizes have moved on (a new level of
// the network): it discards and drops every waiting buffer, so that none
// holds its pages through the stages that do not use it, and returns
// unzeroed memory (see allocUnzeroed). Inside a planned region (BeginPlan)
// a large request may be served from the plan's slab instead.
func AllocDirty(n int) []float32 {
	if n*4 < hugeMin {
		return allocDirty(n)
	}
	sc := activeScope()
	if s := sc.alloc(n); s != nil {
		if poisonDirty.Load() {
			for i := range s {
				s[i] = float32(math.NaN())
			}
		}
		return s
	}
	s := allocDirty(n)
	sc.record(s)
	return s
}

// allocDirty is AllocDirty without memory plans.
func allocDirty(n int) []float32 {
	if poisonDirty.Load() {
		s := Alloc(n)
		for i := range s {
			s[i] = float32(math.NaN())
		}
		return s
	}
	if n*4 < hugeMin {
		return allocUnzeroed(n) // not recycled: the collector's
	}
	recycled.Lock()
	best := -1
	for i, s := range recycled.free {
		if len(s) >= n && len(s) <= n+n/8 && (best < 0 || len(s) < len(recycled.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		s := recycled.free[best]
		recycled.bytes -= len(s) * 4
		recycled.free = slices.Delete(recycled.free, best, best+1)
		recycled.Unlock()
		recycleHits.Add(1)
		return s[:n]
	}
	evictAllLocked()
	recycled.Unlock()
	return allocUnzeroed(n)
}

// poisonDirty makes AllocDirty fill every buffer with NaN (tests).
var poisonDirty atomic.Bool

// PoisonDirty makes AllocDirty (and Empty) return buffers filled with NaN
// while on is set, so that a test sees any value an operation fails to
// write; it returns the previous setting. For tests only.
func PoisonDirty(on bool) (prev bool) { return poisonDirty.Swap(on) }

// ReleaseRecycled discards and drops every buffer waiting for reuse (the
// end of a stage that recycled its activations).
func ReleaseRecycled() {
	recycled.Lock()
	defer recycled.Unlock()
	evictAllLocked()
}

func evictAllLocked() {
	for len(recycled.free) > 0 {
		evictLocked(len(recycled.free) - 1)
	}
}

var recycleHits atomic.Int64

// RecycleHits returns how many AllocDirty calls reused a recycled buffer
// since the process started.
func RecycleHits() int64 { return recycleHits.Load() }

// RecycledBytes returns the bytes of buffers waiting for reuse.
func RecycledBytes() int {
	recycled.Lock()
	defer recycled.Unlock()
	return recycled.bytes
}

// Empty returns a contiguous tensor of the given shape whose values are
// unspecified (see AllocDirty): for outputs written in full.
func Empty(shape ...int) *Tensor {
	n := numel(shape)
	return &Tensor{shape: cloneInts(shape), strides: contiguousStrides(shape), data: AllocDirty(n)}
}

// unzeroed lets AllocDirty's misses skip zeroing (see allocUnzeroed); off,
// they are zeroed as Alloc's (A/B measurements).
var unzeroed = true

// SetUnzeroed sets whether AllocDirty may return memory it did not zero
// (for A/B measurements) and returns the previous setting.
func SetUnzeroed(on bool) (prev bool) { prev, unzeroed = unzeroed, on; return }

// Free hands back s, a large buffer from AllocDirty whose values are dead
// and that the caller owns alone: a buffer of a memory plan's slab returns
// to the slab (see BeginPlan); any other is left to the collector, as if
// dropped.
func Free(s []float32) {
	if cap(s)*4 >= hugeMin {
		planRecycle(s[:cap(s)])
	}
}
