package parallel

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestForCoversOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		SetThreads(threads)
		for _, n := range []int{0, 1, 2, 7, 100, 1001} {
			for _, grain := range []int{0, 1, 16, 5000} {
				hits := make([]int32, n)
				For(n, grain, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						atomic.AddInt32(&hits[i], 1)
					}
				})
				for i, h := range hits {
					if h != 1 {
						t.Fatalf("threads %d n %d grain %d: index %d visited %d times", threads, n, grain, i, h)
					}
				}
			}
		}
	}
	SetThreads(0)
}

func TestDynamicCoversOnce(t *testing.T) {
	defer SetThreads(0)
	for _, threads := range []int{1, 2, 3, 8} {
		SetThreads(threads)
		for _, n := range []int{0, 1, 2, 7, 17, 64, 100, 1001} {
			for _, grain := range []int{0, 1, 4, 16, 5000} {
				hits := make([]int32, n)
				var small atomic.Int32 // chunks under grain
				Dynamic(n, grain, func(lo, hi int) {
					if hi-lo < max(grain, 1) {
						small.Add(1)
					}
					for i := lo; i < hi; i++ {
						atomic.AddInt32(&hits[i], 1)
					}
				})
				for i, h := range hits {
					if h != 1 {
						t.Fatalf("threads %d n %d grain %d: index %d visited %d times", threads, n, grain, i, h)
					}
				}
				if small.Load() > 1 {
					t.Fatalf("threads %d n %d grain %d: %d chunks under the grain (only the last may be)", threads, n, grain, small.Load())
				}
			}
		}
	}
}

// TestDynamicRebalances holds up the first chunk ([0,16) of 64 items on two
// workers) until every other item is done: the other worker must take all
// the rest (a fixed split would wait for ever, caught by the timeout).
func TestDynamicRebalances(t *testing.T) {
	SetThreads(2)
	defer SetThreads(0)
	const n, firstSize = 64, 16 // the first chunk: n over twice the workers
	var done atomic.Int32
	release := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		Dynamic(n, 1, func(lo, hi int) {
			if lo == 0 {
				if hi != firstSize {
					t.Errorf("first chunk [0,%d), want [0,%d)", hi, firstSize)
				}
				select {
				case <-release:
				case <-time.After(10 * time.Second):
					t.Error("the other worker did not take the remaining chunks")
				}
			} else if done.Add(int32(hi-lo)) == n-firstSize {
				close(release)
			}
		})
	}()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("Dynamic did not return")
	}
	if done.Load() != n-firstSize {
		t.Fatalf("%d of %d items done by the other worker", done.Load(), n-firstSize)
	}
}

func TestNestedRunsSerially(t *testing.T) {
	SetThreads(4)
	defer SetThreads(0)
	var active, peak atomic.Int32
	For(4, 1, func(lo, hi int) {
		For(100, 1, func(lo, hi int) {
			n := active.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			active.Add(-1)
		})
	})
	if peak.Load() > 4 {
		t.Fatalf("nested regions ran %d goroutines at once with 4 threads", peak.Load())
	}
	var workers atomic.Int32
	Run(10, func(w, n int) {
		if n != 4 {
			t.Errorf("Run reported %d workers", n)
		}
		workers.Add(1)
	})
	if workers.Load() != 4 {
		t.Fatalf("Run used %d workers", workers.Load())
	}
	if Threads() != 4 {
		t.Fatal("Threads")
	}
}

// TestRegionsAfterParking runs regions back to back (the workers still
// spinning) and after pauses long enough for them to park.
func TestRegionsAfterParking(t *testing.T) {
	SetThreads(3)
	defer SetThreads(0)
	for i, pause := range []time.Duration{0, 0, 2 * spinFor, 0, 5 * time.Millisecond, 0} {
		time.Sleep(pause)
		var seen [3]atomic.Int32
		Run(3, func(w, n int) { seen[w].Add(1) })
		for w := range seen {
			if seen[w].Load() != 1 {
				t.Fatalf("region %d (after %v): worker %d ran %d times", i, pause, w, seen[w].Load())
			}
		}
	}
}

// TestPanicWaitsForHelpers: a panic in the caller's share propagates only
// once the other workers' shares are done, and the pool works after it.
func TestPanicWaitsForHelpers(t *testing.T) {
	SetThreads(2)
	defer SetThreads(0)
	var helperDone atomic.Bool
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic was lost")
			}
			if !helperDone.Load() {
				t.Fatal("Run returned (panicking) before the other worker finished")
			}
		}()
		Run(2, func(w, n int) {
			if w == 1 {
				time.Sleep(20 * time.Millisecond)
				helperDone.Store(true)
				return
			}
			panic("worker 0")
		})
	}()
	var hits atomic.Int32
	For(100, 1, func(lo, hi int) { hits.Add(int32(hi - lo)) })
	if hits.Load() != 100 {
		t.Fatalf("For after a panic covered %d of 100", hits.Load())
	}
}
