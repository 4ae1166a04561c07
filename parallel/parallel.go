// Package parallel is the one worker pool of the engine. Every kernel that
// spreads work over cores goes through For, so no operation oversubscribes the
// machine: nested calls run serially on the calling goroutine.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

var (
	threads atomic.Int32
	busy    atomic.Int32 // >0 while a parallel region runs
)

func init() { threads.Store(int32(runtime.GOMAXPROCS(0))) }

// SetThreads sets the number of workers (n <= 0 means runtime.GOMAXPROCS).
func SetThreads(n int) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	threads.Store(int32(n))
}

// Threads returns the number of workers.
func Threads() int { return int(threads.Load()) }

// For splits [0,n) into at most Threads() contiguous chunks of at least grain
// items and calls fn(lo, hi) for each, in parallel, returning when all are
// done. Called from inside another For (or concurrently from another
// goroutine while a region is running), it runs fn(0, n) on the caller.
func For(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	t := Threads()
	if c := (n + grain - 1) / grain; c < t {
		t = c
	}
	if t <= 1 || !busy.CompareAndSwap(0, 1) {
		fn(0, n)
		return
	}
	defer busy.Store(0)
	var wg sync.WaitGroup
	chunk := (n + t - 1) / t
	for lo := chunk; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, hi)
	}
	fn(0, min(chunk, n))
	wg.Wait()
}

// Run calls fn(i) for i in [0,t) with t = Threads() (or fewer when n < t):
// one call per worker, for kernels that do their own partitioning.
func Run(n int, fn func(worker, workers int)) {
	t := min(Threads(), n)
	if t <= 1 || !busy.CompareAndSwap(0, 1) {
		fn(0, 1)
		return
	}
	defer busy.Store(0)
	var wg sync.WaitGroup
	for i := 1; i < t; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			fn(i, t)
		}(i)
	}
	fn(0, t)
	wg.Wait()
}
