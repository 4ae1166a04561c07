//go:build osediff_nolinkname

package tensor

// allocUnzeroed is Alloc without the runtime's unzeroed allocator.
func allocUnzeroed(n int) []float32 { return Alloc(n) }
