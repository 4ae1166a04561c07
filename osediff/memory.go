package osediff

import (
	"runtime"
	"runtime/debug"
)

// LimitGarbage sets the garbage collector so that the heap grows by about
// budget bytes beyond what is live (the weights dominate what is live), not
// by the default 100% of it: with 5 GB of float32 weights Go's default would
// let 5 GB of dead activations pile up before collecting. It returns the
// previous GC percentage (at least 1%). Programs (the CLI, the server) call it once after
// loading; it changes process-wide state, so the library never calls it
// on its own.
func LimitGarbage(budget int64) int {
	runtime.GC()
	debug.FreeOSMemory() // return what loading and converting freed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live := int64(ms.HeapAlloc)
	pct := 100
	if live > 0 {
		pct = int(100 * budget / live)
	}
	pct = max(1, min(pct, 100))
	return debug.SetGCPercent(pct)
}
