package parallel

import (
	"sync/atomic"
	"testing"
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
