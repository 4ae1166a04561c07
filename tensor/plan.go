package tensor

import (
	"bytes"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Memory plans: a computation that runs again and again at the same sizes
// (a VAE forward at one image size) places its large activations in one
// slab of memory that is kept from call to call, at offsets planned from
// the call before.
//
// Recycling (Recycle, AllocDirty) hands a dead buffer to the next request
// of its size, but each level of a network has new sizes, and the buffers
// of the sizes left behind are given back to the OS so that they do not
// raise the peak. On this project's VM a page given back is returned to
// the host (free page reporting) and costs 1.5–2.5 s per GiB to fault in
// again: the 512×512 decode spent 1.2–1.5 s of system time on it in every
// call. A plan instead gives every buffer of the computation a place in
// one slab, sized to the most bytes alive at once (512 MiB for that
// decode, where its buffers add up to 1.3 GiB), so the second and later
// calls touch only pages they already have.
//
// A planned region (BeginPlan) records, the first time its key is seen,
// the large AllocDirty requests made on its goroutine and which of them
// were recycled, and when; it then packs the recycled ones' lifetimes into
// offsets (largest first, each at the lowest offset free over its
// lifetime). Later regions with that key replay the plan: the i-th request
// takes its planned offset when its size is the recorded one and no
// buffer still in use overlaps it there, and everything else (a request
// the recording never recycled, a different size, another goroutine's
// requests) takes memory as before. Buffers of the slab come back through
// Recycle. A plan is only ever an optimisation: a region that departs
// from it loses the saving, not correctness, and the plan is recorded
// again.

// planLimit is the most bytes a plan's slab may take (SetPlanLimit).
var planLimit atomic.Int64

func init() { planLimit.Store(1 << 30) }

// SetPlanLimit sets the most bytes a memory plan's slab may keep (default
// 1 GiB; 0 turns planning off) and returns the previous limit. A plan that
// would need more is not kept: that computation allocates as it would
// without plans. Lowering the limit does not shrink a slab already made;
// ReleasePlans does.
func SetPlanLimit(bytes int64) (prev int64) { return planLimit.Swap(max(bytes, 0)) }

// maxPlans is how many plans are kept (any one is dropped for a new one).
const maxPlans = 16

// extent is a slab buffer in use: floats [off, off+n).
type extent struct{ off, n int }

// memPlan is the plan of one key: the size of every large request in
// order and its offset in the slab (-1: not from the slab).
type memPlan struct {
	sizes []int
	offs  []int
	need  int // floats of slab
}

// planScope is an active planned region.
type planScope struct {
	key string
	gid uint64
	p   *memPlan // replaying; nil while recording
	i   int      // next request
	off bool     // replaying, departed from the plan: no more slab for this region
	// bestFit: while recording, requests are served best fit from a
	// reserved slab (BeginPlan), not as without a plan (BeginReplayPlan).
	bestFit bool

	// recording: each request's size, the tick it was made and the tick it
	// was recycled (-1: never), and the requests whose buffers are still
	// out, by address.
	sizes  []int
	t0, t1 []int
	out    map[*float32]int
	tick   int
}

var plans struct {
	sync.Mutex
	byKey map[string]*memPlan
	slab  []float32
	unmap func()   // unmaps slab
	inUse []extent // slab buffers handed out and not recycled, by offset
	// reserved: slab is a reservation of address space (Linux), of which
	// only the pages touched take memory; a recording region is served
	// from it too. high is the end of the part touched and kept.
	reserved, tried bool
	high            int
	holds           int // HoldPlans calls not yet released
	active          *planScope
}

// planHits counts requests served from the slab (tests).
var planHits atomic.Int64

// PlanHits returns how many AllocDirty requests a memory plan served from
// its slab since the process started.
func PlanHits() int64 { return planHits.Load() }

// PlanSlabBytes returns the bytes of the plans' slab (0 when none is made).
func PlanSlabBytes() int {
	plans.Lock()
	defer plans.Unlock()
	if plans.reserved {
		return plans.high * 4
	}
	return len(plans.slab) * 4
}

// HoldPlans keeps every page of the slab that planned regions touch until
// the returned function is called (once; holds nest), instead of giving
// back, when each region ends, those that no kept plan needs. A
// computation made of several planned regions with other work between
// them (a pipeline's VAE encode, UNet and decode) then has its later
// regions reuse the earlier ones' pages rather than fault in new ones,
// which on this project's VM cost 1.5–3.5 s per GiB; the peak is that of
// the largest region, as before.
func HoldPlans() (release func()) {
	plans.Lock()
	plans.holds++
	plans.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			plans.Lock()
			defer plans.Unlock()
			plans.holds--
			if plans.holds == 0 && plans.active == nil {
				trimLocked(keptNeedLocked())
			}
		})
	}
}

// PlanBytesOut returns the bytes of slab buffers handed out and not yet
// back: between computations, buffers their results still hold (tests
// check that a computation leaves none).
func PlanBytesOut() int {
	plans.Lock()
	defer plans.Unlock()
	n := 0
	for _, e := range plans.inUse {
		n += e.n * 4
	}
	return n
}

// BeginPlan starts a planned region keyed by key on the calling goroutine
// and returns the function that ends it (see the comment above: the first
// region of a key records, served best fit from the reserved slab where
// there is one; later ones replay). Only one region is active at a time in
// the process: while one is, BeginPlan returns a function that does
// nothing and the region runs unplanned. Regions of the same key must make
// the same requests for their plan to hold (a key names the computation
// and its sizes).
func BeginPlan(key string) (end func()) { return beginPlan(key, true) }

// BeginReplayPlan is BeginPlan for a computation whose first call should
// take its memory as without a plan (recording only): best fit packs
// less tightly than the plan (the untiled 512×512 decode reached 568 MiB
// of slab where its plan needs 512), and where the first call's peak
// matters more than its page faults, the first call keeps its old peak.
func BeginReplayPlan(key string) (end func()) { return beginPlan(key, false) }

func beginPlan(key string, bestFit bool) (end func()) {
	if planLimit.Load() <= 0 {
		return func() {}
	}
	sc := &planScope{key: key, gid: goid(), bestFit: bestFit}
	plans.Lock()
	if plans.active != nil {
		plans.Unlock()
		return func() {}
	}
	if plans.slab == nil && !plans.tried {
		plans.tried = true
		if slab, unmap := reserveSlab(); slab != nil {
			plans.slab, plans.unmap, plans.reserved = slab, unmap, true
		}
	}
	if p := plans.byKey[key]; p != nil {
		if !plans.reserved && len(plans.slab) < p.need && len(plans.inUse) == 0 {
			// One slab for every plan kept: the stages that plan run one
			// after the other.
			unmapSlabLocked()
			plans.slab, plans.unmap = mapSlab(keptNeedLocked())
		}
		if len(plans.slab) >= p.need {
			sc.p = p
		}
	}
	if sc.p == nil {
		sc.out = map[*float32]int{}
	}
	plans.active = sc
	plans.Unlock()
	return func() { endPlan(sc) }
}

// ReleasePlans forgets every plan and unmaps the slab (left mapped, and
// unused, while buffers of it are still out).
func ReleasePlans() {
	plans.Lock()
	defer plans.Unlock()
	plans.byKey = nil
	if len(plans.inUse) == 0 {
		unmapSlabLocked()
	} else {
		// Buffers of it are still out: leave it mapped (and unused), its
		// free pages given back.
		trimLocked(0)
		plans.slab, plans.unmap = nil, nil
	}
	plans.inUse = nil
	plans.reserved, plans.tried, plans.high = false, false, 0
}

// unmapSlabLocked unmaps the slab, whose buffers are all back.
func unmapSlabLocked() {
	if plans.unmap != nil {
		plans.unmap()
	}
	plans.slab, plans.unmap = nil, nil
}

// trimLocked gives the OS back the pages of a reserved slab past keep
// floats that no buffer in use holds.
func trimLocked(keep int) {
	if !plans.reserved {
		return
	}
	lo := keep
	for _, e := range plans.inUse {
		if e.off > lo && lo < plans.high {
			discard(plans.slab[lo:min(e.off, plans.high)])
		}
		lo = max(lo, e.off+e.n)
	}
	if lo < plans.high {
		discard(plans.slab[lo:plans.high])
	}
	plans.high = max(keep, lo)
}

// keptNeedLocked is the most floats of slab a kept plan needs.
func keptNeedLocked() int {
	need := 0
	for _, p := range plans.byKey {
		need = max(need, p.need)
	}
	return need
}

func endPlan(sc *planScope) {
	plans.Lock()
	defer plans.Unlock()
	if plans.active != sc {
		return
	}
	plans.active = nil
	// A reserved slab keeps the pages the kept plans need, no more: the
	// rest of what this region touched goes back to the OS, unless the
	// pages are held for the regions to come (HoldPlans).
	defer func() {
		if plans.holds == 0 {
			trimLocked(keptNeedLocked())
		}
	}()
	switch {
	case sc.p != nil && (sc.off || sc.i != len(sc.p.sizes)):
		delete(plans.byKey, sc.key) // departed: record again next time
	case sc.p == nil:
		p := packPlan(sc.sizes, sc.t0, sc.t1)
		if int64(p.need)*4 > planLimit.Load() {
			return
		}
		if plans.byKey == nil {
			plans.byKey = map[string]*memPlan{}
		}
		for k := range plans.byKey {
			if len(plans.byKey) < maxPlans {
				break
			}
			delete(plans.byKey, k) // a server sees many sizes: keep a few
		}
		plans.byKey[sc.key] = p
	}
}

// packPlan places the requests that were recycled (t1 >= 0) in a slab:
// largest first, each at the lowest offset where it overlaps no request
// already placed whose lifetime [t0, t1) meets its own.
func packPlan(sizes, t0, t1 []int) *memPlan {
	p := &memPlan{sizes: sizes, offs: make([]int, len(sizes))}
	order := make([]int, 0, len(sizes))
	for i := range sizes {
		p.offs[i] = -1
		if t1[i] >= 0 {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return sizes[b] - sizes[a] })
	var placed []int
	for _, i := range order {
		var busy []extent // placed requests alive with i, by offset
		for _, j := range placed {
			if t0[j] < t1[i] && t0[i] < t1[j] {
				busy = append(busy, extent{p.offs[j], sizes[j]})
			}
		}
		slices.SortFunc(busy, func(a, b extent) int { return a.off - b.off })
		off := 0
		for _, b := range busy {
			if off+sizes[i] <= b.off {
				break
			}
			off = max(off, b.off+b.n)
		}
		p.offs[i] = off
		p.need = max(p.need, off+sizes[i])
		placed = append(placed, i)
	}
	return p
}

// alloc serves a large AllocDirty request of n floats from the plan of sc,
// the calling goroutine's active region (nil: none), or returns nil (the
// request takes memory as before, and record notes it while recording).
func (sc *planScope) alloc(n int) []float32 {
	if sc == nil || sc.off {
		return nil
	}
	plans.Lock()
	defer plans.Unlock()
	if plans.active != sc {
		return nil
	}
	if sc.p == nil {
		// Recording: a reserved slab serves the request where it fits now
		// (bestFitLocked), so that even the first call at a size reuses
		// the pages its dead buffers leave, whatever their sizes; the plan
		// packs the lifetimes better for the calls after.
		if !sc.bestFit {
			return nil
		}
		s := bestFitLocked(n)
		if s != nil {
			sc.recordLocked(s)
		}
		return s
	}
	i := sc.i
	sc.i++
	if i >= len(sc.p.sizes) || sc.p.sizes[i] != n {
		sc.off = true
		return nil
	}
	off := sc.p.offs[i]
	if off < 0 || off+n > len(plans.slab) {
		return nil
	}
	for _, e := range plans.inUse {
		if e.off < off+n && off < e.off+e.n {
			return nil // a buffer the plan expected back is still in use
		}
	}
	return useLocked(off, n)
}

// useLocked hands out the slab's floats [off, off+n).
func useLocked(off, n int) []float32 {
	i, _ := slices.BinarySearchFunc(plans.inUse, off, func(e extent, off int) int { return e.off - off })
	plans.inUse = slices.Insert(plans.inUse, i, extent{off, n})
	plans.high = max(plans.high, off+n)
	planHits.Add(1)
	return plans.slab[off : off+n : off+n]
}

// bestFitLocked serves n floats from a reserved slab in the smallest gap
// between the buffers in use that holds them, else past the last one (at
// offsets that are multiples of 4 KiB), or returns nil.
func bestFitLocked(n int) []float32 {
	if !plans.reserved {
		return nil
	}
	const align = 1 << 10 // floats
	best, bestGap := -1, 0
	off := 0
	for _, e := range plans.inUse {
		if gap := e.off - off; gap >= n && (best < 0 || gap < bestGap) {
			best, bestGap = off, gap
		}
		off = max(off, (e.off+e.n+align-1)&^(align-1))
	}
	if best < 0 {
		best = off
	}
	if best+n > len(plans.slab) {
		return nil
	}
	return useLocked(best, n)
}

// record notes, while sc (the calling goroutine's active region, or nil)
// records, a large request that was served as before.
func (sc *planScope) record(s []float32) {
	if sc == nil || sc.p != nil || len(s) == 0 {
		return
	}
	plans.Lock()
	defer plans.Unlock()
	if plans.active != sc {
		return
	}
	sc.recordLocked(s)
}

func (sc *planScope) recordLocked(s []float32) {
	sc.tick++
	sc.out[unsafe.SliceData(s)] = len(sc.sizes)
	sc.sizes = append(sc.sizes, len(s))
	sc.t0 = append(sc.t0, sc.tick)
	sc.t1 = append(sc.t1, -1)
}

// planRecycle takes back a recycled buffer: a slab buffer returns to the
// slab (true); a buffer a recording region handed out is noted as dead
// (and goes on to be recycled as before: false).
func planRecycle(s []float32) bool {
	if len(s) == 0 {
		return false
	}
	plans.Lock()
	defer plans.Unlock()
	if sc := plans.active; sc != nil && sc.out != nil {
		if i, ok := sc.out[unsafe.SliceData(s)]; ok {
			delete(sc.out, unsafe.SliceData(s))
			sc.tick++
			sc.t1[i] = sc.tick
		}
	}
	if off, ok := slabOffset(s); ok {
		for k, e := range plans.inUse {
			if e.off == off {
				plans.inUse = slices.Delete(plans.inUse, k, k+1)
				break
			}
		}
		return true
	}
	return false
}

// slabOffset returns the offset of s in the slab, if it lies there.
func slabOffset(s []float32) (int, bool) {
	if len(plans.slab) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(plans.slab)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	if p < base || p >= base+uintptr(len(plans.slab))*4 {
		return 0, false
	}
	return int((p - base) / 4), true
}

// activeScope returns the active planned region when the calling goroutine
// is its own.
func activeScope() *planScope {
	plans.Lock()
	sc := plans.active
	plans.Unlock()
	if sc == nil || goid() != sc.gid {
		return nil
	}
	return sc
}

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 7 [running]:"). Go exposes no cheaper way; it is
// called only for requests of at least 4 MiB while a region is active.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return math.MaxUint64
	}
	return id
}
