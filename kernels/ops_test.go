package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// compare fails t at the first element where |got-want| > tol*max(|want|, floor).
func compare(t *testing.T, name string, got, want []float32, tol, floor float64) {
	t.Helper()
	if i, d := firstDiff(got, want, tol, floor); i >= 0 {
		t.Fatalf("%s: [%d] = %g, want %g (|diff| %.3g, tol %g·max(|want|,%g))", name, i, got[i], want[i], d, tol, floor)
	}
}

// Conv tolerance: 1e-5 relative to max(|y|, 1) (unit-normal data, sums of
// up to a few thousand products in a different order).
func TestConv2DConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	type tc struct {
		n, inC, outC, h, w, k, s, dil int
		pt, pb, pl, pr                int
		bias                          bool
	}
	cases := []tc{
		{1, 3, 5, 7, 9, 3, 1, 1, 1, 1, 1, 1, true},
		{2, 4, 17, 13, 11, 3, 1, 1, 1, 1, 1, 1, false},
		{1, 5, 33, 16, 17, 3, 2, 1, 0, 1, 0, 1, true}, // VAE downsample pad
		{1, 8, 16, 15, 15, 1, 1, 1, 0, 0, 0, 0, true}, // 1x1
		{1, 7, 14, 9, 31, 1, 1, 1, 0, 0, 0, 0, false},
		{1, 3, 9, 12, 10, 3, 1, 2, 2, 2, 2, 2, true}, // dilation
		{1, 2, 6, 11, 13, 5, 1, 1, 2, 2, 2, 2, true},
		{1, 3, 4, 10, 12, 3, 2, 1, 1, 1, 1, 1, true},
		{1, 3, 8, 10, 12, 3, 1, 1, 0, 0, 0, 0, true},
		{1, 6, 65, 8, 8, 3, 1, 1, 1, 1, 1, 1, true},
		{1, 16, 128, 18, 20, 3, 1, 1, 1, 1, 1, 1, true},
		{1, 3, 2, 1, 1, 3, 1, 1, 1, 1, 1, 1, true},
		{1, 2, 3, 6, 6, 2, 3, 1, 0, 0, 0, 0, false}, // stride 3 (vertical stride gather path)
		{1, 4, 127, 33, 7, 3, 1, 1, 1, 1, 1, 1, true},
		{1, 3, 14, 9, 128, 3, 2, 1, 0, 1, 0, 1, true}, // stride 2, output width 64 (whole panels)
		{2, 5, 20, 10, 64, 3, 1, 1, 1, 1, 1, 1, true}, // output width a multiple of every tile width
		{2, 3, 16, 7, 96, 3, 1, 1, 1, 1, 1, 1, false}, // ... of 32 and 48, batch 2
		{1, 3, 5, 13, 17, 3, 2, 2, 1, 2, 2, 1, true},  // stride 2 with dilation, asymmetric pads
		{1, 4, 6, 9, 9, 1, 2, 1, 0, 0, 0, 0, true},    // 1x1 stride 2
		{2, 3, 7, 11, 37, 4, 3, 1, 3, 0, 2, 1, true},  // stride 3, even kernel, pads wider than stride
		{1, 2, 31, 17, 63, 3, 2, 1, 1, 1, 1, 1, true}, // stride 2 with symmetric pad
	}
	// Vertical-only stride: StrideH 2, StrideW 1.
	for _, l := range levels()[1:] {
		for _, c := range cases {
			for _, sh := range []int{0, 2} {
				p := Conv2DParams{InC: c.inC, OutC: c.outC, KH: c.k, KW: c.k, StrideH: c.s, StrideW: c.s,
					PadT: c.pt, PadB: c.pb, PadL: c.pl, PadR: c.pr, DilH: c.dil, DilW: c.dil}
				if sh != 0 {
					if c.s != 1 {
						continue
					}
					p.StrideH = sh
				}
				oh, ow := p.OutSize(c.h, c.w)
				if oh <= 0 || ow <= 0 {
					continue
				}
				x := randSlice(r, c.n*c.inC*c.h*c.w)
				wt := randSlice(r, c.outC*c.inC*c.k*c.k)
				var b []float32
				if c.bias {
					b = randSlice(r, c.outC)
				}
				want := make([]float32, c.n*c.outC*oh*ow)
				got := make([]float32, len(want))
				for i := range got {
					got[i] = float32(math.NaN())
				}
				conv2DRef(p, c.n, c.h, c.w, x, wt, b, want)
				withISA(t, l, func() { Conv2D(p, c.n, c.h, c.w, x, wt, b, got) })
				compare(t, fmt.Sprintf("%v/%+v", l, p), got, want, 1e-5, 1)
			}
		}
	}
}

// Attention tolerance: 1e-5 relative to max(|o|, 1) (outputs are convex
// combinations of unit-normal values).
func TestAttentionConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	type tc struct{ batch, heads, lq, lk, dim int }
	cases := []tc{{1, 1, 1, 1, 1}, {1, 2, 17, 33, 8}, {2, 3, 15, 65, 16}, {1, 1, 127, 257, 64},
		{1, 5, 300, 77, 40}, {2, 1, 65, 63, 33}, {1, 2, 257, 300, 64}, {1, 1, 3, 0, 4}, {1, 1, 31, 513, 17},
		{1, 2, 40, 768, 64}} // the last: three full key blocks, each one call of softmaxTile
	for _, l := range levels()[1:] {
		for _, c := range cases {
			for _, causal := range []bool{false, true} {
				for _, pad := range []int{0, 3} {
					w := c.heads*c.dim + pad
					p := AttentionParams{Batch: c.batch, Heads: c.heads, Lq: c.lq, Lk: c.lk, Dim: c.dim,
						LdQ: w, LdK: w + 1, LdV: w + 2, LdO: w, Scale: 1 / float32(math.Sqrt(float64(c.dim))), Causal: causal}
					q := randSlice(r, c.batch*c.lq*p.LdQ)
					k := randSlice(r, c.batch*c.lk*p.LdK)
					v := randSlice(r, c.batch*c.lk*p.LdV)
					want := make([]float32, c.batch*c.lq*p.LdO)
					got := make([]float32, len(want))
					attentionRef(p, q, k, v, want)
					withISA(t, l, func() { Attention(p, q, k, v, got) })
					compare(t, fmt.Sprintf("%v/%+v", l, p), got, want, 1e-5, 1)
				}
			}
		}
	}
}

// unaligned returns a slice of n values starting one float past a 64-byte
// boundary-ish offset, so vector loads are unaligned.
func unaligned(r *rand.Rand, n int, scale float64) []float32 {
	s := randSlice(r, n+1)[1:]
	for i := range s {
		s[i] *= float32(scale)
	}
	return s
}

var eltSizes = append(append([]int(nil), awkward...), 1000, 4099)

// Element-wise tolerances: 2e-6 relative (a few float32 ulps; the vector exp
// is within 2 ulps of float64 exp) with a 1e-30 absolute floor, except where
// stated.
func TestElementwiseConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	type op struct {
		name       string
		tol, floor float64
		run        func(x, b, y []float32, n int)
		ref        func(x, b, y []float32, n int)
	}
	ops := []op{
		{"SiLU", 2e-6, 1e-30, func(x, _, y []float32, n int) { SiLU(x, y) }, func(x, _, y []float32, n int) { siluRef(x, y) }},
		{"QuickGELU", 2e-6, 1e-30, func(x, _, y []float32, n int) { QuickGELU(x, y) }, func(x, _, y []float32, n int) { quickGELURef(x, y) }},
		{"GELU", 2e-6, 1e-30, func(x, _, y []float32, n int) { GELU(x, y) }, func(x, _, y []float32, n int) { geluRef(x, y) }},
		{"Add", 0, 0, func(x, b, y []float32, n int) { Add(y, x, b) }, func(x, b, y []float32, n int) { addRef(y, x, b) }},
		{"Mul", 0, 0, func(x, b, y []float32, n int) { Mul(y, x, b) }, func(x, b, y []float32, n int) { mulRef(y, x, b) }},
		// FMA rounds once where the reference rounds twice: 1 ulp of the terms.
		{"AddScaled", 2e-7, 1, func(x, b, y []float32, n int) { AddScaled(y, x, 0.3, b) }, func(x, b, y []float32, n int) { addScaledRef(y, x, 0.3, b) }},
		{"Scale", 0, 0, func(x, _, y []float32, n int) { Scale(y, x, -1.5) }, func(x, _, y []float32, n int) { scaleRef(y, x, -1.5) }},
	}
	for _, l := range levels()[1:] {
		for _, o := range ops {
			for _, n := range eltSizes {
				for _, sc := range []float64{1, 6} {
					x := unaligned(r, n, sc)
					b := unaligned(r, n, 1)
					want, got := make([]float32, n), make([]float32, n)
					o.ref(x, b, want, n)
					withISA(t, l, func() { o.run(x, b, got, n) })
					compare(t, fmt.Sprintf("%v/%s/n=%d/scale=%g", l, o.name, n, sc), got, want, o.tol, o.floor)
				}
			}
		}
	}
}

// GELU over its whole range, including where 1+erf cancels (x << 0): within
// 4 float32 ulps of the float64 formula down to 1e-30.
func TestGELURange(t *testing.T) {
	var xs []float32
	for x := -20.0; x <= 20; x += 1.0 / 512 {
		xs = append(xs, float32(x))
	}
	xs = append(xs, 0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1e-7, -1e-7)
	want := make([]float32, len(xs))
	geluRef(xs, want)
	for _, l := range levels()[1:] {
		got := make([]float32, len(xs))
		withISA(t, l, func() { GELU(xs, got) })
		for i, w := range want {
			d := math.Abs(float64(got[i] - w))
			if d > 4*ulp(w) && d > 1e-30 {
				t.Fatalf("%v: GELU(%g) = %g, want %g (%.1f ulp)", l, xs[i], got[i], w, d/ulp(w))
			}
		}
	}
}

func ulp(v float32) float64 {
	a := math.Abs(float64(v))
	return float64(math.Nextafter32(float32(a), float32(math.Inf(1)))) - a
}

func TestNormsConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, l := range levels()[1:] {
		// GroupNorm: odd channel counts and spatial sizes, offset mean.
		for _, c := range []struct{ n, c, hw, g int }{{1, 4, 1, 2}, {2, 6, 17, 3}, {1, 32, 33, 32}, {1, 9, 65, 3}, {3, 10, 127, 5}, {1, 64, 257, 32}} {
			for _, silu := range []bool{false, true} {
				for _, mean := range []float64{0, 100} {
					x := unaligned(r, c.n*c.c*c.hw, 3)
					for i := range x {
						x[i] += float32(mean)
					}
					ga, be := randSlice(r, c.c), randSlice(r, c.c)
					want, got := make([]float32, len(x)), make([]float32, len(x))
					groupNormRef(x, want, c.n, c.c, c.hw, c.g, 1e-6, ga, be, silu)
					withISA(t, l, func() { GroupNorm(x, got, c.n, c.c, c.hw, c.g, 1e-6, ga, be, silu) })
					tol := 1e-5
					if mean != 0 {
						tol = 1e-4 // x itself carries 100·2^-24 of rounding relative to its spread 3
					}
					compare(t, fmt.Sprintf("%v/GroupNorm/%+v/silu=%v/mean=%g", l, c, silu, mean), got, want, tol, 1)
				}
			}
		}
		// LayerNorm with and without affine.
		for _, cols := range eltSizes[1:] {
			rows := 3
			x := unaligned(r, rows*cols, 2)
			ga, be := randSlice(r, cols), randSlice(r, cols)
			for _, aff := range []bool{true, false} {
				g, b := ga, be
				if !aff {
					g, b = nil, nil
				}
				want, got := make([]float32, len(x)), make([]float32, len(x))
				layerNormRef(x, want, rows, cols, 1e-5, g, b)
				withISA(t, l, func() { LayerNorm(x, got, rows, cols, 1e-5, g, b) })
				compare(t, fmt.Sprintf("%v/LayerNorm/cols=%d/affine=%v", l, cols, aff), got, want, 1e-5, 1)
			}
		}
		// Softmax, GEGLU, row/channel vectors.
		for _, cols := range eltSizes[1:] {
			rows := 3
			x := unaligned(r, rows*cols, 4)
			want, got := append([]float32(nil), x...), append([]float32(nil), x...)
			softmaxRef(want, rows, cols)
			withISA(t, l, func() { Softmax(got, rows, cols) })
			compare(t, fmt.Sprintf("%v/Softmax/cols=%d", l, cols), got, want, 1e-5, 1e-30)

			x2 := unaligned(r, rows*2*cols, 3)
			want, got = make([]float32, rows*cols), make([]float32, rows*cols)
			gegluRef(x2, want, rows, cols)
			withISA(t, l, func() { GEGLU(x2, got, rows, cols) })
			compare(t, fmt.Sprintf("%v/GEGLU/cols=%d", l, cols), got, want, 2e-6, 1e-30)

			vec := randSlice(r, cols)
			want, got = append([]float32(nil), x...), append([]float32(nil), x...)
			addRowVectorRef(want, rows, cols, vec)
			withISA(t, l, func() { AddRowVector(got, rows, cols, vec) })
			compare(t, fmt.Sprintf("%v/AddRowVector/cols=%d", l, cols), got, want, 0, 0)

			cv := randSlice(r, 2*rows)
			want, got = append([]float32(nil), x...), append([]float32(nil), x...)
			addChannelVectorRef(want[:2*rows*(cols/2)], 2, rows, cols/2, cv)
			withISA(t, l, func() { AddChannelVector(got[:2*rows*(cols/2)], 2, rows, cols/2, cv) })
			compare(t, fmt.Sprintf("%v/AddChannelVector/hw=%d", l, cols/2), got, want, 0, 0)
		}
	}
}

// Upsample is exact: every output equals its source pixel.
func TestUpsample2xNearest(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, s := range [][3]int{{1, 1, 1}, {3, 5, 7}, {2, 17, 31}, {5, 33, 65}, {1, 2, 257}, {64, 9, 0}, {300, 4, 3}} {
		nc, h, w := s[0], s[1], s[2]
		x := randSlice(r, nc*h*w)
		got := make([]float32, nc*4*h*w)
		Upsample2xNearest(x, got, nc, h, w)
		for p := 0; p < nc; p++ {
			for i := 0; i < 2*h; i++ {
				for j := 0; j < 2*w; j++ {
					if g, want := got[(p*2*h+i)*2*w+j], x[(p*h+i/2)*w+j/2]; g != want {
						t.Fatalf("%v: y[%d,%d,%d] = %g, want %g", s, p, i, j, g, want)
					}
				}
			}
		}
	}
}

// TestGatherStride: the strided gather of the phase images (even512 at stride
// 2) equals the scalar loop at awkward lengths and source offsets.
func TestGatherStride(t *testing.T) {
	for _, l := range levels() {
		withISA(t, l, func() {
			for _, stride := range []int{2, 3} {
				for _, n := range []int{0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 65, 127, 257} {
					for off := 0; off < 3; off++ {
						src := make([]float32, off+(max(n, 1)-1)*stride+1)
						for i := range src {
							src[i] = float32(i)
						}
						dst := make([]float32, n)
						gatherStride(dst, src[off:], stride)
						for i, v := range dst {
							if want := src[off+i*stride]; v != want {
								t.Fatalf("%v stride %d n %d off %d: dst[%d] = %g, want %g", l, stride, n, off, i, v, want)
							}
						}
					}
				}
			}
		})
	}
}

// TestZip: the interleave (zip512) equals the scalar loop at awkward lengths.
func TestZip(t *testing.T) {
	for _, l := range levels() {
		withISA(t, l, func() {
			for _, n := range []int{0, 1, 15, 16, 17, 31, 33, 63, 65, 127, 257} {
				a, b := make([]float32, n), make([]float32, n)
				for i := range a {
					a[i], b[i] = float32(i), float32(-i-1)
				}
				dst := make([]float32, 2*n)
				Zip(dst, a, b)
				for i := 0; i < n; i++ {
					if dst[2*i] != a[i] || dst[2*i+1] != b[i] {
						t.Fatalf("%v n %d: dst[%d:%d] = %v, want %g %g", l, n, 2*i, 2*i+2, dst[2*i:2*i+2], a[i], b[i])
					}
				}
			}
		})
	}
}

// TestStreamingAffine: the non-temporal stores of GroupNorm's last pass
// (large outputs) write what ordinary stores write, bit for bit, at awkward
// lengths and at destinations aligned to a vector or not (unaligned ones
// take ordinary stores).
func TestStreamingAffine(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, l := range levels()[1:] {
		withISA(t, l, func() {
			v := fast()
			for _, n := range eltSizes {
				for _, shift := range []int{0, 1, 5, 16} {
					x := unaligned(r, n, 3)
					buf := make([]float32, n+32)
					want, got := make([]float32, n), buf[shift:shift+n]
					for _, act := range []bool{false, true} {
						affine(v, x, want, 0.7, -0.2, act, false)
						affine(v, x, got, 0.7, -0.2, act, true)
						for i := range want {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%v n=%d shift=%d act=%v: [%d] = %g, want %g", l, n, shift, act, i, got[i], want[i])
							}
						}
					}
				}
			}
		})
	}
}
