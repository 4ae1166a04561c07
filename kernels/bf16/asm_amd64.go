//go:build !noasm

package bf16

import "golang.org/x/sys/cpu"

//go:noescape
func dpbf16p14x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s14x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16p12x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s12x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16p8x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s8x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16p4x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s4x32(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16p6x64(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s6x64(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16p4x64(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

//go:noescape
func dpbf16s4x64(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)

// packPairs32 sets, for p < kp and j < 32, dst[p*32+j] = src[offs[2p]+j] |
// src[offs[2p+1]+j]<<16 (offsets in bf16 elements).
//
//go:noescape
func packPairs32(dst *uint32, src *uint16, offs *int, kp int)

// packPairs64 is packPairs32 for 64 columns.
//
//go:noescape
func packPairs64(dst *uint32, src *uint16, offs *int, kp int)

// cvtRow sets dst[i] = bf16(src[i]) (round to nearest even) for i < n, n a
// multiple of 32.
//
//go:noescape
func cvtRow(dst *uint16, src *float32, n int)

func init() {
	x := cpu.X86
	if !(x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512BF16) {
		return
	}
	hasAsm = true
	tiles = []*tile{
		{name: "14x32", mr: 14, nr: 32, eff: 1, kp: dpbf16p14x32, ks: dpbf16s14x32},
		{name: "12x32", mr: 12, nr: 32, eff: 1, kp: dpbf16p12x32, ks: dpbf16s12x32},
		{name: "8x32", mr: 8, nr: 32, eff: 0.95, kp: dpbf16p8x32, ks: dpbf16s8x32},
		{name: "4x32", mr: 4, nr: 32, eff: 0.7, kp: dpbf16p4x32, ks: dpbf16s4x32},
		{name: "6x64", mr: 6, nr: 64, eff: 0.95, kp: dpbf16p6x64, ks: dpbf16s6x64},
		{name: "4x64", mr: 4, nr: 64, eff: 0.85, kp: dpbf16p4x64, ks: dpbf16s4x64},
	}
	packPairs = map[int]func(dst *uint32, src *uint16, offs *int, kp int){32: packPairs32, 64: packPairs64}
	cvtRowAsm = cvtRow
	useAsm.Store(true)
}
