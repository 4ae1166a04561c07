package osediff

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
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

// SpillAuto as Options.SpillAbove sets the tiled VAE's memory budget to half
// the memory available when the call starts: a machine with room keeps every
// tile in memory, a small one parks them in files.
const SpillAuto = -1

// spillBudget resolves Options.SpillAbove to bytes (0: no budget).
func spillBudget(above int64) int64 {
	if above != SpillAuto {
		return above
	}
	return memAvailable() / 2
}

// memAvailable is the kernel's estimate of the memory available to start new
// work without swapping (Linux MemAvailable), in bytes; 0 where unknown.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
