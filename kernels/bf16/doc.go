// Package bf16 runs the matrix products and convolutions of the engine with
// bfloat16 operands and float32 accumulation, on the AVX-512 BF16 dot product
// (VDPBF16PS: per zmm instruction, 16 lanes × 2 bf16 products added into a
// float32 lane, 64 FLOP).
//
// Weights are converted once into pre-packed operands (LeftMatrix for the
// left factor of C = A·B: convolution weights [OutC, InC·KH·KW]; RightMatrix
// for the right factor given by its transposed rows: nn.Linear weights
// [out, in]); activations are rounded to bf16 (round to nearest even) while
// their panels are packed. Packed operands hold pairs of consecutive k in one
// 32-bit word (low half k = 2p, high half k = 2p+1), the layout VDPBF16PS
// multiplies pairwise; an odd k is padded with a zero.
//
// Without AVX512_BF16 (another CPU, another architecture, or the `noasm`
// build tag) Available reports false and the same API rounds the operands to
// bf16 values held in float32 and runs the float32 kernels of package
// kernels: the same numbers up to the order of the float32 additions, at the
// float32 speed.
//
// The Go assembler has no mnemonics for the BF16 instructions: gen_asm.go
// encodes them as raw bytes (see the note there on how the encodings were
// checked against GNU as).
package bf16

//go:generate go run gen_asm.go
