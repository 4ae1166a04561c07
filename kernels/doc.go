// Package kernels is the narrow compute contract of the engine: a dozen
// operations on dense float32 slices (row-major, NCHW for images) that every
// model is built from. Each has a pure-Go reference implementation that is
// always built; fast paths (amd64 assembly, chosen at run time) must equal the
// reference within the tolerance stated in their tests. The `noasm` build tag
// forces the reference paths.
//
// Work is spread over cores through package parallel only.
package kernels
