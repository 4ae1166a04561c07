package kernels

import (
	"fmt"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// Mat is a read-only row-major matrix operand (a layer's weights) held either
// in float32 or, to halve its memory, in IEEE 754 binary16. The kernels widen
// float16 to float32 as they pack it, a panel at a time, so a float16 matrix
// costs no float32 copy of its own. Exactly one of F32 and F16 is set (or
// neither, for an empty matrix).
type Mat struct {
	F32 []float32
	F16 []uint16
}

// F32 wraps float32 values as a Mat.
func F32(a []float32) Mat { return Mat{F32: a} }

// Len is the number of values.
func (m Mat) Len() int {
	if m.F16 != nil {
		return len(m.F16)
	}
	return len(m.F32)
}

// Half reports whether the values are float16.
func (m Mat) Half() bool { return m.F16 != nil }

// Slice returns values [lo, hi).
func (m Mat) Slice(lo, hi int) Mat {
	if m.F16 != nil {
		return Mat{F16: m.F16[lo:hi]}
	}
	return Mat{F32: m.F32[lo:hi]}
}

// At returns value i as float32.
func (m Mat) At(i int) float32 {
	if m.F16 != nil {
		return tensor.F16ToF32(m.F16[i])
	}
	return m.F32[i]
}

// Read writes values [off, off+len(dst)) into dst as float32.
func (m Mat) Read(dst []float32, off int) {
	if m.F16 != nil {
		WidenF16(dst, m.F16[off:off+len(dst)])
		return
	}
	copy(dst, m.F32[off:off+len(dst)])
}

// Float32 returns the values as float32: the F32 slice itself, or a new
// widened copy of F16.
func (m Mat) Float32() []float32 {
	if m.F16 == nil {
		return m.F32
	}
	out := tensor.Alloc(len(m.F16))
	parallel.For(len(out), 1<<16, func(lo, hi int) { WidenF16(out[lo:hi], m.F16[lo:hi]) })
	return out
}

// NarrowF16 converts float32 values to float16 (round to nearest even; see
// tensor.F32ToF16), in parallel.
func NarrowF16(src []float32) []uint16 {
	out := make([]uint16, len(src))
	parallel.For(len(src), 1<<16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = tensor.F32ToF16(src[i])
		}
	})
	return out
}

// WidenF16 converts float16 values to float32 exactly (len(dst) must equal
// len(src)).
//
//	for i := range src { dst[i] = tensor.F16ToF32(src[i]) }
func WidenF16(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("kernels.WidenF16: %d values into %d", len(src), len(dst)))
	}
	i := 0
	if v := fast(); v != nil && v.widenF16 != nil {
		if n := len(src) / v.w * v.w; n > 0 {
			v.widenF16(&dst[0], &src[0], n)
			i = n
		}
	}
	for ; i < len(src); i++ {
		dst[i] = tensor.F16ToF32(src[i])
	}
}
