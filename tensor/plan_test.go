package tensor

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"
)

// TestPackPlan checks packPlan on random lifetimes: requests alive at the
// same time never share memory, the slab is no smaller than the most bytes
// alive at once, and requests never recycled stay out of it.
func TestPackPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 200 {
		n := rng.IntN(40)
		sizes, t0, t1 := make([]int, n), make([]int, n), make([]int, n)
		for i := range n {
			sizes[i] = 1 + rng.IntN(100)
			t0[i] = rng.IntN(100)
			t1[i] = t0[i] + 1 + rng.IntN(30)
			if rng.IntN(6) == 0 {
				t1[i] = -1
			}
		}
		p := packPlan(sizes, t0, t1)
		peak := 0
		for tick := range 140 {
			live := 0
			for i := range n {
				if t1[i] >= 0 && t0[i] <= tick && tick < t1[i] {
					live += sizes[i]
				}
			}
			peak = max(peak, live)
		}
		if p.need < peak {
			t.Fatalf("trial %d: slab %d floats, %d alive at once", trial, p.need, peak)
		}
		for i := range n {
			if (t1[i] < 0) != (p.offs[i] < 0) {
				t.Fatalf("trial %d: request %d (recycled at %d) placed at %d", trial, i, t1[i], p.offs[i])
			}
			if p.offs[i] >= 0 && p.offs[i]+sizes[i] > p.need {
				t.Fatalf("trial %d: request %d ends past the slab", trial, i)
			}
			for j := range i {
				if p.offs[i] < 0 || p.offs[j] < 0 || t0[i] >= t1[j] || t0[j] >= t1[i] {
					continue
				}
				if p.offs[i] < p.offs[j]+sizes[j] && p.offs[j] < p.offs[i]+sizes[i] {
					t.Fatalf("trial %d: requests %d and %d are alive together and overlap", trial, i, j)
				}
			}
		}
	}
}

// overlaps reports whether a and b share memory.
func overlaps(a, b []float32) bool {
	pa, pb := uintptr(unsafe.Pointer(unsafe.SliceData(a))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return pa < pb+uintptr(len(b))*4 && pb < pa+uintptr(len(a))*4
}

func inSlab(s []float32) bool {
	plans.Lock()
	defer plans.Unlock()
	_, ok := slabOffset(s)
	return ok
}

// TestPlanReplay runs a region's requests again and again: the first run
// records (served best fit from a reserved slab, on Linux), later ones
// take their planned places in the slab, and a run that
// departs from the plan (another size, a buffer held past its recorded
// end, another goroutine's request) is served as without a plan, with
// buffers that never overlap one still in use.
func TestPlanReplay(t *testing.T) {
	ReleasePlans()
	defer ReleasePlans()
	const n = 1 << 20 // 4 MiB: the smallest planned request
	fill := func(s []float32, v float32) {
		for i := range s {
			s[i] = v
		}
	}
	check := func(s []float32, v float32, what string) {
		t.Helper()
		for _, x := range s {
			if x != v {
				t.Fatalf("%s: holds %v, want %v", what, x, v)
			}
		}
	}
	// run is the region: a and b alive together, a recycled, c made (it may
	// take a's place), then b and c recycled. size changes c's size; hold
	// keeps a until the end; foreign makes a request on another goroutine.
	type opts struct {
		size             int
		hold, foreign    bool
		wantHits, wantIn int
	}
	run := func(name string, o opts) {
		t.Helper()
		hits := PlanHits()
		end := BeginPlan("test")
		a := AllocDirty(n)
		fill(a, 1)
		b := AllocDirty(2 * n)
		fill(b, 2)
		if o.foreign {
			var f []float32
			var wg sync.WaitGroup
			wg.Go(func() { f = AllocDirty(n) })
			wg.Wait()
			if inSlab(f) {
				t.Errorf("%s: another goroutine's request came from the slab", name)
			}
		}
		if !o.hold {
			Recycle(a, math.MaxInt)
		}
		c := AllocDirty(o.size)
		fill(c, 3)
		check(b, 2, name+": b")
		if o.hold {
			check(a, 1, name+": a held")
			if overlaps(a, c) {
				t.Errorf("%s: c overlaps a, still in use", name)
			}
			Recycle(a, math.MaxInt)
		}
		in := 0
		for _, s := range [][]float32{a, b, c} {
			if inSlab(s) {
				in++
			}
		}
		Recycle(b, math.MaxInt)
		Recycle(c, math.MaxInt)
		end()
		ReleaseRecycled()
		if got := PlanHits() - hits; got != int64(o.wantHits) || in != o.wantIn {
			t.Errorf("%s: %d requests served from the slab (%d buffers in it), want %d (%d)", name, got, in, o.wantHits, o.wantIn)
		}
	}
	run("record", opts{size: n, wantHits: 3, wantIn: 3})
	run("replay", opts{size: n, wantHits: 3, wantIn: 3})
	if got := PlanSlabBytes(); got != 3*n*4 {
		t.Errorf("slab of %d bytes, want %d (a and c share a place)", got, 3*n*4)
	}
	run("replay with a held", opts{size: n, hold: true, wantHits: 2, wantIn: 2})
	run("replay with a foreign request", opts{size: n, foreign: true, wantHits: 3, wantIn: 3})
	run("replay with another size", opts{size: 3 * n, wantHits: 2, wantIn: 2})
	run("record again", opts{size: 3 * n, wantHits: 3, wantIn: 3})
	run("replay the new plan", opts{size: 3 * n, wantHits: 3, wantIn: 3})

	// Only one region at a time: a second one runs unplanned.
	end := BeginPlan("test")
	end2 := BeginPlan("other")
	end2()
	s := AllocDirty(n)
	if !inSlab(s) {
		t.Error("the first region lost its plan to a second one")
	}
	Recycle(s, math.MaxInt)
	end()

	// Poisoned buffers from the slab hold NaNs, as others do.
	defer PoisonDirty(PoisonDirty(true))
	for i := range 2 {
		end = BeginPlan("poison")
		s = AllocDirty(n)
		if i == 1 && (!inSlab(s) || !math.IsNaN(float64(s[0])) || !math.IsNaN(float64(s[n-1]))) {
			t.Error("a poisoned buffer from the slab holds numbers")
		}
		Recycle(s, math.MaxInt)
		end()
	}
	PoisonDirty(false)

	// A limit below the plan's need keeps no plan; 0 turns planning off.
	ReleasePlans()
	if PlanSlabBytes() != 0 {
		t.Error("ReleasePlans kept the slab")
	}
	prev := SetPlanLimit(int64(2 * n * 4))
	defer SetPlanLimit(prev)
	run("record over the limit", opts{size: n, wantHits: 3, wantIn: 3})
	run("no plan kept", opts{size: n, wantHits: 3, wantIn: 3})
	SetPlanLimit(0)
	run("planning off", opts{size: n})
	run("planning off again", opts{size: n})
}

// requireReservedSlab skips the test where the OS gives plans no reserved
// slab (recording regions are then served as without a plan); it leaves
// no plan behind.
func requireReservedSlab(t *testing.T) {
	t.Helper()
	ReleasePlans()
	BeginPlan("probe")()
	plans.Lock()
	reserved := plans.reserved
	plans.Unlock()
	ReleasePlans()
	if !reserved {
		t.Skip("no reserved slab on this OS")
	}
}

// TestPlanBestFit checks a recording region's best-fit service from the
// reserved slab: a request takes the place a dead buffer left, whatever
// their sizes; a buffer never handed back keeps its place through later
// regions until it is (Free); and the pages of a plan not kept go back.
func TestPlanBestFit(t *testing.T) {
	requireReservedSlab(t)
	defer ReleasePlans()
	const n = 1 << 20
	end := BeginPlan("best fit")
	a := AllocDirty(3 * n)
	b := AllocDirty(2 * n)
	Free(a)
	c := AllocDirty(2 * n) // a's place, smaller
	if !inSlab(a) || !inSlab(b) || !inSlab(c) || &c[0] != &a[0] || overlaps(b, c) {
		t.Fatalf("c did not take a's place (a %p, b %p, c %p)", &a[0], &b[0], &c[0])
	}
	Free(b)
	end() // c escapes: never handed back in the region
	for i := range c {
		c[i] = 7
	}
	for range 3 {
		end = BeginPlan("best fit")
		a := AllocDirty(3 * n)
		b := AllocDirty(2 * n)
		for i := range a {
			a[i] = 1
		}
		for i := range b {
			b[i] = 2
		}
		if overlaps(a, c) || overlaps(b, c) {
			t.Fatal("a later region took the place of a buffer still out")
		}
		Free(a)
		Free(b)
		end()
	}
	for _, v := range c {
		if v != 7 {
			t.Fatalf("the buffer still out holds %v, want 7", v)
		}
	}
	Free(c)
	// A replay-only region records its first call without the slab.
	for i := range 2 {
		end = BeginReplayPlan("replay only")
		a := AllocDirty(n)
		if inSlab(a) != (i == 1) {
			t.Errorf("replay-only region, call %d: from the slab %v", i, inSlab(a))
		}
		Recycle(a, math.MaxInt)
		end()
	}
	ReleaseRecycled()
	ReleasePlans()
	prev := SetPlanLimit(4) // keeps no plan: every page goes back
	defer SetPlanLimit(prev)
	end = BeginPlan("not kept")
	Free(AllocDirty(n))
	end()
	if got := PlanSlabBytes(); got != 0 {
		t.Errorf("%d bytes of slab kept without a plan", got)
	}
}

// TestHoldPlans checks that a held slab keeps the pages a region touched
// past its end, for the next region to reuse, and gives back those no kept
// plan needs once the last hold is released.
func TestHoldPlans(t *testing.T) {
	requireReservedSlab(t)
	defer ReleasePlans()
	prev := SetPlanLimit(4) // keeps no plan
	defer SetPlanLimit(prev)
	const n = 1 << 20
	outer := HoldPlans()
	inner := HoldPlans()
	end := BeginPlan("held")
	a := AllocDirty(2 * n)
	Free(a)
	end()
	if got := PlanSlabBytes(); got != 2*n*4 {
		t.Fatalf("held slab of %d bytes, want %d", got, 2*n*4)
	}
	end = BeginPlan("next")
	b := AllocDirty(n)
	if &b[0] != &a[0] {
		t.Error("the next region did not reuse the held pages")
	}
	Free(b)
	end()
	inner()
	inner()
	if got := PlanSlabBytes(); got != 2*n*4 {
		t.Errorf("slab of %d bytes while a hold remains, want %d", got, 2*n*4)
	}
	outer()
	if got := PlanSlabBytes(); got != 0 {
		t.Errorf("slab of %d bytes after the last hold, want 0 (no plan kept)", got)
	}
}

// TestPlanCount checks that at most maxPlans plans are kept.
func TestPlanCount(t *testing.T) {
	ReleasePlans()
	defer ReleasePlans()
	for i := range 3 * maxPlans {
		end := BeginPlan(string(rune('A' + i)))
		s := AllocDirty(1 << 20)
		Recycle(s, math.MaxInt)
		end()
	}
	plans.Lock()
	n := len(plans.byKey)
	plans.Unlock()
	if n != maxPlans {
		t.Errorf("%d plans kept, want %d", n, maxPlans)
	}
	ReleaseRecycled()
}

// TestPlanConcurrent runs regions of one key on several goroutines at once
// (one of them planned at a time, the others not): every buffer keeps the
// values its goroutine wrote while it is in use.
func TestPlanConcurrent(t *testing.T) {
	ReleasePlans()
	defer ReleasePlans()
	const n = 1 << 20
	hits := PlanHits()
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 4 {
		wg.Go(func() {
			for it := range 12 {
				end := BeginPlan("concurrent")
				v := float32(g*100 + it)
				a, b := AllocDirty(n), AllocDirty(2*n)
				for i := range a {
					a[i] = v
				}
				for i := range b {
					b[i] = v + 0.5
				}
				Recycle(a, math.MaxInt)
				c := AllocDirty(n)
				for i := range c {
					c[i] = v + 0.25
				}
				for i := 0; i < len(b); i += 4093 {
					if b[i] != v+0.5 || (i < len(c) && c[i] != v+0.25) {
						errs <- "a buffer in use was overwritten"
						break
					}
				}
				Recycle(b, math.MaxInt)
				Recycle(c, math.MaxInt)
				end()
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if PlanHits() == hits {
		t.Error("no region replayed the plan")
	}
	ReleaseRecycled()
}
