// Package parallel is the one worker pool of the engine. Every kernel that
// spreads work over cores goes through For, Dynamic or Run, so no operation
// oversubscribes the machine: nested calls run serially on the calling
// goroutine. For gives each worker a fixed share; Dynamic hands out chunks
// as workers become free, for work whose items may take uneven time (a
// core slowed by another process on a shared machine).
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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
	chunk := (n + t - 1) / t
	t = (n + chunk - 1) / chunk
	region(t, func(w int) { fn(w*chunk, min((w+1)*chunk, n)) })
}

// Dynamic calls fn(lo, hi) for chunks that cover [0,n) once, in parallel,
// returning when all are done: For for independent items of uneven cost,
// or on a machine where a core may run slower for a while. Unlike For's
// fixed shares, the chunks are taken by the workers as they become free
// (guided self-scheduling: each chunk is the items left over twice the
// workers, at least grain), so a worker slowed by another process on its
// core takes fewer of them instead of holding the others up at the end.
// Chunks are handed out in increasing order. Nested (see For) it runs
// fn(0, n) on the caller.
func Dynamic(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	t := min(Threads(), (n+grain-1)/grain)
	if t <= 1 || !busy.CompareAndSwap(0, 1) {
		fn(0, n)
		return
	}
	defer busy.Store(0)
	var next atomic.Int64
	region(t, func(int) {
		for {
			lo, hi := take(&next, n, t, grain)
			if lo >= hi {
				return
			}
			fn(lo, hi)
		}
	})
}

// take claims the next chunk of Dynamic's [0,n) for one of t workers.
func take(next *atomic.Int64, n, t, grain int) (lo, hi int) {
	for {
		lo := int(next.Load())
		rem := n - lo
		if rem <= 0 {
			return n, n
		}
		size := min(max((rem+2*t-1)/(2*t), grain), rem)
		if next.CompareAndSwap(int64(lo), int64(lo+size)) {
			return lo, lo + size
		}
	}
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
	region(t, func(w int) { fn(w, t) })
}

// The workers are long-lived goroutines. Between regions each one spins for
// a short while (spinFor) before it parks: the regions of a kernel sequence
// (a convolution's bands, one layer after another) follow each other within
// microseconds, and waking a parked goroutine costs 0.1–0.4 ms on this
// project's machine (its thread sleeps in the OS), measured as the second
// worker of a 7 ms SGEMM starting that late. The caller runs worker 0's share
// itself and waits for the others the same way.
const spinFor = 200 * time.Microsecond

type helper struct {
	seq  atomic.Uint64 // bumped when a task is posted
	task func()
	wake sleeper
}

var (
	helpersMu sync.Mutex
	helpers   []*helper

	pending atomic.Int32 // helpers' shares of the current region not yet done
	caller  = sleeper{ch: make(chan struct{}, 1)}
)

// region runs task(0) on the caller and task(1..t-1) on helpers, and returns
// when all are done (also when task(0) panics). The caller holds busy.
func region(t int, task func(w int)) {
	hs := helperPool(t - 1)
	pending.Store(int32(t - 1))
	for i, h := range hs {
		w := i + 1
		h.task = func() { task(w) }
		h.seq.Add(1)
		h.wake.notify()
	}
	defer caller.wait(func() bool { return pending.Load() == 0 })
	task(0)
}

// helperPool returns n helpers, starting those not yet running.
func helperPool(n int) []*helper {
	helpersMu.Lock()
	defer helpersMu.Unlock()
	for len(helpers) < n {
		h := &helper{wake: sleeper{ch: make(chan struct{}, 1)}}
		helpers = append(helpers, h)
		go h.loop()
	}
	return helpers[:n]
}

func (h *helper) loop() {
	var last uint64
	for {
		h.wake.wait(func() bool { return h.seq.Load() != last })
		last = h.seq.Load()
		h.task()
		h.task = nil
		if pending.Add(-1) == 0 {
			caller.notify()
		}
	}
}

// A sleeper is where one goroutine waits for a condition: it spins for up
// to spinFor, then parks until notify. Its flag and the condition are
// atomics, so either the waiter sees the condition or the notifier sees the
// flag; a token left over from such a race only makes the waiter look again.
type sleeper struct {
	parked atomic.Bool
	ch     chan struct{} // capacity 1
}

// wait returns once cond holds.
func (s *sleeper) wait(cond func() bool) {
	if spinUntil(cond) {
		return
	}
	for !cond() {
		s.parked.Store(true)
		if !cond() {
			<-s.ch
		}
		s.parked.Store(false)
	}
}

// notify wakes the waiter if it is parked; call it after making its
// condition true.
func (s *sleeper) notify() {
	if s.parked.Load() {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}

// spinUntil polls cond for at most spinFor, yielding now and then; it
// reports whether cond became true.
func spinUntil(cond func() bool) bool {
	var start time.Time
	for i := 0; ; i++ {
		if cond() {
			return true
		}
		if i%256 == 255 {
			if start.IsZero() {
				start = time.Now()
			} else if time.Since(start) > spinFor {
				return false
			}
			runtime.Gosched()
		}
	}
}
