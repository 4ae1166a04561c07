//go:build !linux

package tensor

func adviseHuge([]float32) {}

func discard([]float32) {}

// mapSlab returns n floats of unzeroed memory from the Go heap (see the
// Linux version) and a function that leaves it to the collector.
func mapSlab(n int) ([]float32, func()) { return allocUnzeroed(n), func() {} }

// reserveSlab reserves nothing outside Linux: a plan's slab is made at its
// size when it is replayed.
func reserveSlab() ([]float32, func()) { return nil, nil }
