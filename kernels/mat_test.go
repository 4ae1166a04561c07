package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// halfSlice returns n random float16 values and their float32 widening.
func halfSlice(r *rand.Rand, n int) ([]uint16, []float32) {
	h := make([]uint16, n)
	f := make([]float32, n)
	for i := range h {
		h[i] = tensor.F32ToF16(float32(r.NormFloat64()))
		f[i] = tensor.F16ToF32(h[i])
	}
	return h, f
}

// WidenF16 equals the scalar conversion for every float16 value, on every
// level, at every length and alignment around the vector widths.
func TestWidenF16(t *testing.T) {
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	for _, l := range levels() {
		withISA(t, l, func() {
			got := make([]float32, len(all))
			WidenF16(got, all)
			for i, h := range all {
				w := tensor.F16ToF32(h)
				if math.Float32bits(got[i]) != math.Float32bits(w) && !(w != w && got[i] != got[i]) {
					t.Fatalf("%v: widen(%#04x) = %g, want %g", l, h, got[i], w)
				}
			}
			for _, n := range awkward {
				for off := 0; off < 3; off++ {
					dst := make([]float32, n+off+1)
					dst[n+off] = 42
					WidenF16(dst[off:off+n], all[1000+off:1000+off+n])
					for i := 0; i < n; i++ {
						if dst[off+i] != tensor.F16ToF32(all[1000+off+i]) {
							t.Fatalf("%v: n=%d off=%d: element %d", l, n, off, i)
						}
					}
					if dst[n+off] != 42 {
						t.Fatalf("%v: n=%d off=%d: wrote past the end", l, n, off)
					}
				}
			}
		})
	}
}

// A float16 operand gives exactly the result of its float32 widening: the
// widened panels feed the same micro-kernels in the same order.
func TestSgemmMatF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	type tc struct {
		m, n, k int
		ta, tb  bool
		off     int
	}
	var cases []tc
	for _, s := range awkward {
		cases = append(cases, tc{s, s, s, false, false, 0}, tc{s, 17, 33, true, false, 1}, tc{33, s, 9, false, true, 3}, tc{15, 31, s, true, true, 1})
	}
	cases = append(cases, tc{130, 300, 600, false, true, 0}, tc{257, 65, 513, false, false, 2}, tc{29, 1100, 270, true, true, 0})
	for _, l := range levels() {
		for _, c := range cases {
			name := fmt.Sprintf("%v/%dx%dx%d/ta=%v/tb=%v/off=%d", l, c.m, c.n, c.k, c.ta, c.tb, c.off)
			lda, ldb, ldc := c.k+c.off, c.n+c.off, c.n
			if c.ta {
				lda = c.m + c.off
			}
			if c.tb {
				ldb = c.k + c.off
			}
			ah, af := halfSlice(r, max(c.m, c.k)*lda+1)
			bh, bf := halfSlice(r, max(c.n, c.k)*ldb+1)
			for _, which := range []string{"A", "B", "AB"} {
				a, b := F32(af), F32(bf)
				if which != "B" {
					a = Mat{F16: ah}
				}
				if which != "A" {
					b = Mat{F16: bh}
				}
				want := make([]float32, c.m*ldc)
				got := make([]float32, c.m*ldc)
				withISA(t, l, func() {
					Sgemm(c.ta, c.tb, c.m, c.n, c.k, 0.5, af, lda, bf, ldb, 0, want, ldc)
					SgemmMat(c.ta, c.tb, c.m, c.n, c.k, 0.5, a, lda, b, ldb, 0, got, ldc)
				})
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s/f16 %s: C[%d] = %g, want %g", name, which, i, got[i], want[i])
					}
				}
			}
		}
	}
}

func TestConv2DMatF16(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	cases := []Conv2DParams{
		{InC: 3, OutC: 5, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1},
		{InC: 17, OutC: 33, KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadB: 1, PadR: 1},
		{InC: 31, OutC: 15, KH: 1, KW: 1, StrideH: 1, StrideW: 1},
		{InC: 9, OutC: 65, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1},
	}
	for _, l := range levels() {
		for ci, p := range cases {
			for _, hw := range [][2]int{{1, 1}, {7, 13}, {16, 33}} {
				h, w := hw[0], hw[1]
				x := randSlice(r, 2*p.InC*h*w)
				wh, wf := halfSlice(r, p.OutC*p.InC*p.KH*p.KW)
				bias := randSlice(r, p.OutC)
				oh, ow := p.OutSize(h, w)
				want := make([]float32, 2*p.OutC*oh*ow)
				got := make([]float32, len(want))
				withISA(t, l, func() {
					Conv2D(p, 2, h, w, x, wf, bias, want)
					Conv2DMat(p, 2, h, w, x, Mat{F16: wh}, bias, got)
				})
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%v/case %d/%dx%d: y[%d] = %g, want %g", l, ci, h, w, i, got[i], want[i])
					}
				}
			}
		}
	}
}
