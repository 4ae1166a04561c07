package bf16

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/kernels"
)

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// refProduct returns, for C = A·B with A(i,p) = a(i,p), B(p,j) = b(p,j), the
// float64 sums of the exact products of the bf16-rounded operands (what the
// kernels compute up to the float32 additions), of the exact float32
// products, and of |a·b| (the scale of the rounding errors).
func refProduct(m, n, k int, a, b func(i, j int) float32) (bf, f32, abs []float64) {
	bf, f32, abs = make([]float64, m*n), make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, t, u float64
			for p := 0; p < k; p++ {
				av, bv := a(i, p), b(p, j)
				s += float64(RoundToFloat32(av)) * float64(RoundToFloat32(bv))
				t += float64(av) * float64(bv)
				u += math.Abs(float64(av) * float64(bv))
			}
			bf[i*n+j], f32[i*n+j], abs[i*n+j] = s, t, u
		}
	}
	return
}

// Tolerances. Against the bf16 reference only the float32 accumulation
// differs: |err| <= 1e-5·Σ|a·b| (about k·2^-24 with room for the order).
// Against float32: rounding to bf16 (8 significant bits) is off by at most
// 2^-8 relatively, a product of two rounded factors by (1+2^-8)²-1 < 7.83e-3,
// so |err| <= 8e-3·Σ|a·b| is a bound, not a guess; the aggregate relative
// error must also stay under 1e-2.
const (
	tolBF  = 1e-5
	tolF32 = 8e-3
)

func checkAgainst(t *testing.T, what string, got []float32, ldc, m, n int, bias func(i, j int) float64, bf, f32, abs []float64) {
	t.Helper()
	var num, den float64
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			g := float64(got[i*ldc+j]) - bias(i, j)
			s := abs[i*n+j] + 1e-30
			if d := math.Abs(g - bf[i*n+j]); d > tolBF*s+1e-6 {
				t.Fatalf("%s: C(%d,%d) = %g, bf16 reference %g (|err| %g > %g·Σ|ab| = %g)", what, i, j, g, bf[i*n+j], d, tolBF, tolBF*s)
			}
			if d := math.Abs(g - f32[i*n+j]); d > tolF32*s+1e-6 {
				t.Fatalf("%s: C(%d,%d) = %g, float32 reference %g (|err| %g > %g·Σ|ab|)", what, i, j, g, f32[i*n+j], d, tolF32)
			}
			num += (g - f32[i*n+j]) * (g - f32[i*n+j])
			den += f32[i*n+j] * f32[i*n+j]
		}
	}
	if den > 0 && math.Sqrt(num/den) > 1e-2 {
		t.Fatalf("%s: relative RMS error against float32 %g > 1e-2", what, math.Sqrt(num/den))
	}
}

// modes runs f with the BF16 kernels (when the CPU has them) and with the
// float32 fallback.
func modes(t *testing.T, f func(t *testing.T)) {
	for _, on := range []bool{true, false} {
		if on && !Available() {
			t.Logf("no AVX512_BF16 here: only the fallback is tested")
			continue
		}
		name := map[bool]string{true: "bf16", false: "fallback"}[on]
		t.Run(name, func(t *testing.T) {
			prev := SetEnabled(on)
			defer SetEnabled(prev)
			f(t)
		})
	}
}

var gemmSizes = []struct{ m, n, k int }{
	{1, 1, 1}, {1, 33, 2}, {3, 5, 3}, {14, 32, 256}, {15, 31, 17}, {13, 64, 257},
	{29, 100, 300}, {64, 600, 64}, {8, 65, 520}, {4, 128, 33}, {40, 40, 0},
	// k of 512 and 1024 pair words (k = 1024, 2047): the
	// pair rows of RightMatrix.Gemm's left factor are padded (pairStride).
	{29, 40, 1024}, {15, 33, 2047},
}

func TestLeftGemm(t *testing.T) {
	modes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, sz := range gemmSizes {
			for _, withBias := range []bool{false, true} {
				m, n, k := sz.m, sz.n, sz.k
				lda, ldb, ldc := k+3, n+1, n+5
				a, b := randSlice(r, m*lda), randSlice(r, k*ldb+1)
				var bias []float32
				biasAt := func(i, j int) float64 { return 0 }
				if withBias {
					bias = randSlice(r, m)
					biasAt = func(i, j int) float64 { return float64(bias[i]) }
				}
				c := randSlice(r, m*ldc)
				L := PackLeft(m, k, a, lda)
				L.Gemm(n, b, ldb, bias, c, ldc)
				bf, f32, abs := refProduct(m, n, k, func(i, p int) float32 { return a[i*lda+p] }, func(p, j int) float32 { return b[p*ldb+j] })
				checkAgainst(t, fmt.Sprintf("%dx%dx%d bias=%v", m, n, k, withBias), c, ldc, m, n, biasAt, bf, f32, abs)
			}
		}
	})
}

func TestRightGemm(t *testing.T) {
	modes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, sz := range gemmSizes {
			for _, withBias := range []bool{false, true} {
				m, n, k := sz.m, sz.n, sz.k
				lda, ldw, ldc := k+1, k+2, n+3
				a, w := randSlice(r, m*lda), randSlice(r, n*ldw)
				var bias []float32
				biasAt := func(i, j int) float64 { return 0 }
				if withBias {
					bias = randSlice(r, n)
					biasAt = func(i, j int) float64 { return float64(bias[j]) }
				}
				c := randSlice(r, m*ldc)
				R := PackRightT(n, k, w, ldw)
				R.Gemm(m, a, lda, bias, c, ldc)
				bf, f32, abs := refProduct(m, n, k, func(i, p int) float32 { return a[i*lda+p] }, func(p, j int) float32 { return w[j*ldw+p] })
				checkAgainst(t, fmt.Sprintf("%dx%dx%d bias=%v", m, n, k, withBias), c, ldc, m, n, biasAt, bf, f32, abs)
			}
		}
	})
}

// TestTiles runs every micro-kernel, packed and strided, at sizes with edge
// tiles in both directions and more than one k block.
func TestTiles(t *testing.T) {
	if !Available() {
		t.Skip("no AVX512_BF16 on this CPU: the tiles cannot run (the fallback is tested elsewhere)")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, tl := range tiles {
		for _, sz := range []struct{ m, n, k int }{{tl.mr, tl.nr, 2}, {2*tl.mr + 1, 3*tl.nr - 5, 2*kcPairs*2 + 3}} {
			m, n, k := sz.m, sz.n, sz.k
			a, b := randSlice(r, m*k), randSlice(r, k*n)
			rbias, cbias := randSlice(r, m), randSlice(r, n)
			bf, f32, abs := refProduct(m, n, k, func(i, p int) float32 { return a[i*k+p] }, func(p, j int) float32 { return b[p*n+j] })
			kp := (k + 1) / 2
			// B packed from its transpose, as a RightMatrix would be (any width).
			bt := make([]float32, n*k)
			for p := 0; p < k; p++ {
				for j := 0; j < n; j++ {
					bt[j*k+p] = b[p*n+j]
				}
			}
			bpk := packRightT(tl.nr, n, k, bt, k)
			np := (n + tl.nr - 1) / tl.nr
			B := func(_ []uint32, pc, kcb, jc, nc int) []uint32 {
				base := pc*np*tl.nr + jc/tl.nr*kcb*tl.nr
				return bpk[base : base+(nc+tl.nr-1)/tl.nr*kcb*tl.nr]
			}
			rows := make([]uint32, m*kp)
			for i := 0; i < m; i++ {
				for p := 0; p < kp; p++ {
					v := uint32(Round(a[i*k+2*p]))
					if 2*p+1 < k {
						v |= uint32(Round(a[i*k+2*p+1])) << 16
					}
					rows[i*kp+p] = v
				}
			}
			for _, A := range []aOperand{{packed: packLeft(tl, m, k, a, k)}, {rows: rows, lda: kp}} {
				c := make([]float32, m*n)
				run(tl, m, n, kp, A, B, c, n, rbias, cbias)
				what := fmt.Sprintf("tile %s packed=%v %dx%dx%d", tl.name, A.packed != nil, m, n, k)
				checkAgainst(t, what, c, n, m, n, func(i, j int) float64 { return float64(rbias[i]) + float64(cbias[j]) }, bf, f32, abs)
			}
		}
	}
}

func TestRound(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	vals := []float32{0, 1, -1, 1.00390625, 1.01171875, 3.3e38, -3.3e38, float32(math.Inf(1)), float32(math.Inf(-1)),
		1.0039063, 1.0039062, 65504, 1e-30, -2.5e-38, 1e-39, -5e-40, 1e-45}
	for i := 0; i < 1000; i++ {
		vals = append(vals, float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(60)-30))))
		// Exact ties: the low 16 bits 0x8000.
		vals = append(vals, math.Float32frombits(r.Uint32()&0x3fff0000|0x8000))
	}
	for len(vals)%32 != 0 {
		vals = append(vals, 0.5)
	}
	got := make([]uint16, len(vals))
	convert(got, vals)
	for i, v := range vals {
		want := Round(v)
		if got[i] != want {
			t.Fatalf("convert(%g = %#08x) = %#04x, want %#04x", v, math.Float32bits(v), got[i], want)
		}
		// Round to nearest even, checked against float64 arithmetic.
		w := float64(Widen(want))
		if math.IsInf(w, 0) && !math.IsInf(float64(v), 0) {
			t.Fatalf("Round(%g) overflowed", v)
		}
		if math.Abs(float64(v)) < 0x1p-126 {
			if w != 0 {
				t.Fatalf("Round(%g) = %g: a denormal input must flush to zero", v, w)
			}
			continue
		}
		if d, e := math.Abs(float64(v)-w), math.Abs(float64(v))*math.Pow(2, -8); !math.IsInf(float64(v), 0) && d > e {
			t.Fatalf("Round(%g) = %g: error %g > half an ulp", v, w, d)
		}
	}
	if h := Round(float32(math.NaN())); !math.IsNaN(float64(Widen(h))) {
		t.Fatalf("Round(NaN) = %#04x, not a NaN", h)
	}
}

var convCases = []struct {
	name string
	p    kernels.Conv2DParams
	n    int
	h, w int
}{
	{"3x3 pad1", kernels.Conv2DParams{InC: 4, OutC: 16, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}, 1, 10, 32},
	{"3x3 pad1 odd K straddle", kernels.Conv2DParams{InC: 3, OutC: 5, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}, 2, 7, 9},
	{"3x3 wide", kernels.Conv2DParams{InC: 8, OutC: 30, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}, 1, 5, 64},
	{"1x1", kernels.Conv2DParams{InC: 33, OutC: 20, KH: 1, KW: 1, StrideH: 1, StrideW: 1}, 1, 8, 40},
	{"3x3 stride2 asym pad", kernels.Conv2DParams{InC: 6, OutC: 9, KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadB: 1, PadR: 1}, 1, 16, 70},
	{"dilated", kernels.Conv2DParams{InC: 5, OutC: 7, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 2, PadB: 2, PadL: 2, PadR: 2, DilH: 2, DilW: 2}, 1, 9, 33},
	{"deep K", kernels.Conv2DParams{InC: 40, OutC: 14, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}, 1, 4, 32},
}

func TestConv2D(t *testing.T) {
	modes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		for _, tc := range convCases {
			p := tc.p
			x := randSlice(r, tc.n*p.InC*tc.h*tc.w)
			wt := randSlice(r, p.OutC*p.InC*p.KH*p.KW)
			bias := randSlice(r, p.OutC)
			oh, ow := p.OutSize(tc.h, tc.w)
			y := randSlice(r, tc.n*p.OutC*oh*ow)
			L := PackConv(p, wt)
			L.Conv2D(p, tc.n, tc.h, tc.w, x, bias, y)
			sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
			dh, dw := max(p.DilH, 1), max(p.DilW, 1)
			kk := p.InC * p.KH * p.KW
			for b := 0; b < tc.n; b++ {
				xb := x[b*p.InC*tc.h*tc.w:]
				// im2col as functions: A = weights, B(k, q) = tap k at pixel q.
				A := func(o, k int) float32 { return wt[o*kk+k] }
				B := func(k, q int) float32 {
					c, u, v := k/(p.KH*p.KW), k/p.KW%p.KH, k%p.KW
					i, j := q/ow*sh-p.PadT+u*dh, q%ow*sw-p.PadL+v*dw
					if i < 0 || i >= tc.h || j < 0 || j >= tc.w {
						return 0
					}
					return xb[(c*tc.h+i)*tc.w+j]
				}
				bf, f32, abs := refProduct(p.OutC, oh*ow, kk, A, B)
				checkAgainst(t, fmt.Sprintf("%s batch %d", tc.name, b), y[b*p.OutC*oh*ow:], oh*ow, p.OutC, oh*ow,
					func(i, j int) float64 { return float64(bias[i]) }, bf, f32, abs)
			}
		}
	})
}

// Bands and the fused input transform give the same bits as the plain
// convolution of the transformed input; accumulating adds y within 1e-5 of
// max(|y|, 1) (the residual joins the float32 sum earlier).
func TestConv2DExFusions(t *testing.T) {
	modes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, tc := range convCases {
			p := tc.p
			n, h, w := tc.n, tc.h, tc.w
			x := randSlice(r, n*p.InC*h*w)
			wt := randSlice(r, p.OutC*p.InC*p.KH*p.KW)
			bias := randSlice(r, p.OutC)
			oh, ow := p.OutSize(h, w)
			res := randSlice(r, n*p.OutC*oh*ow)
			sc, sh := randSlice(r, n*p.InC), randSlice(r, n*p.InC)
			pre := &kernels.ChannelAffine{Scale: sc, Shift: sh, SiLU: true}
			xn := make([]float32, len(x))
			pre.Apply(x, xn, n*p.InC, h*w)
			L := PackConv(p, wt)
			want := make([]float32, len(res))
			L.Conv2D(p, n, h, w, xn, bias, want)
			for _, bb := range []int{1, 6 << 20} {
				pb, pc := kernels.SetConvBand(bb, 1)
				got := make([]float32, len(res))
				L.Conv2DEx(p, n, h, w, x, bias, got, kernels.ConvOptions{Pre: pre})
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s bands %d: y[%d] = %g, want %g", tc.name, bb, i, got[i], want[i])
					}
				}
				copy(got, res)
				L.Conv2DEx(p, n, h, w, x, bias, got, kernels.ConvOptions{Pre: pre, Accumulate: true})
				for i := range want {
					wv := float64(want[i]) + float64(res[i])
					if d := math.Abs(float64(got[i]) - wv); d > 1e-5*math.Max(math.Abs(wv), 1) {
						t.Fatalf("%s bands %d accumulate: y[%d] = %g, want %g", tc.name, bb, i, got[i], wv)
					}
				}
				kernels.SetConvBand(pb, pc)
			}
		}
	})
}
