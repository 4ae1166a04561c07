//go:build !amd64 || noasm

package bf16

// Without amd64 assembly Available reports false and every product runs on
// the float32 kernels with bf16-rounded operands.
