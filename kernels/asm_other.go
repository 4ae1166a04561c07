//go:build !amd64 || noasm

package kernels

// Without amd64 assembly (other architectures, or the `noasm` build tag) the
// detected level stays Generic and every kernel runs its pure-Go reference.
