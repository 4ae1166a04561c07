package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The banded convolution, the fused GroupNorm(+SiLU) input transform and the
// accumulating store, on every level, against the plain path: bands and the
// fused transform give the same bits (the packed values and the summation
// order are unchanged); accumulating differs only by where the residual is
// added (tolerance 1e-6 relative to max(|y|, 1)).
func TestConv2DExFusions(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cases := []Conv2DParams{
		{InC: 4, OutC: 5, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1},
		{InC: 8, OutC: 17, KH: 3, KW: 3, StrideH: 2, StrideW: 2, PadB: 1, PadR: 1},
		{InC: 6, OutC: 33, KH: 1, KW: 1, StrideH: 1, StrideW: 1},
		{InC: 2, OutC: 14, KH: 5, KW: 5, StrideH: 1, StrideW: 1, PadT: 2, PadB: 2, PadL: 2, PadR: 2, DilH: 2, DilW: 2},
		{InC: 4, OutC: 65, KH: 3, KW: 3, StrideH: 3, StrideW: 1, PadT: 3, PadB: 0, PadL: 1, PadR: 1},
	}
	sizes := [][2]int{{1, 1}, {7, 13}, {17, 31}, {33, 64}}
	defer func(b, c int) { convBandBytes, convBandMinCols = b, c }(convBandBytes, convBandMinCols)
	for _, l := range levels() {
		for ci, p := range cases {
			for _, hw := range sizes {
				h, w := hw[0], hw[1]
				oh, ow := p.OutSize(h, w)
				if oh <= 0 || ow <= 0 {
					continue
				}
				const n = 2
				name := fmt.Sprintf("%v/case %d/%dx%d", l, ci, h, w)
				x := randSlice(r, n*p.InC*h*w)
				wt := randSlice(r, p.OutC*p.InC*p.KH*p.KW)
				bias := randSlice(r, p.OutC)
				gamma, beta := randSlice(r, p.InC), randSlice(r, p.InC)
				res := randSlice(r, n*p.OutC*oh*ow)
				withISA(t, l, func() {
					convBandBytes, convBandMinCols = 6<<20, 2048
					// Plain: GroupNorm+SiLU into a tensor, then the convolution.
					xn := make([]float32, len(x))
					GroupNorm(x, xn, n, p.InC, h*w, 2, 1e-5, gamma, beta, true)
					want := make([]float32, len(res))
					Conv2D(p, n, h, w, xn, wt, bias, want)
					for _, bandBytes := range []int{1, 6 << 20} {
						convBandBytes, convBandMinCols = bandBytes, 1
						got := make([]float32, len(res))
						Conv2D(p, n, h, w, xn, wt, bias, got)
						sameBits(t, fmt.Sprintf("%s/bands %d", name, bandBytes), got, want)
						sc, sh := GroupNormAffine(x, n, p.InC, h*w, 2, 1e-5, gamma, beta)
						clear(got)
						Conv2DEx(p, n, h, w, x, F32(wt), bias, got, ConvOptions{Pre: &ChannelAffine{Scale: sc, Shift: sh, SiLU: true}})
						sameBits(t, fmt.Sprintf("%s/bands %d/fused norm", name, bandBytes), got, want)
						copy(got, res)
						Conv2DEx(p, n, h, w, x, F32(wt), bias, got, ConvOptions{Pre: &ChannelAffine{Scale: sc, Shift: sh, SiLU: true}, Accumulate: true})
						for i := range got {
							wv := float64(want[i]) + float64(res[i])
							if d := math.Abs(float64(got[i]) - wv); d > 1e-6*math.Max(math.Abs(wv), 1) {
								t.Fatalf("%s/bands %d/accumulate: y[%d] = %g, want %g", name, bandBytes, i, got[i], wv)
							}
						}
					}
				})
			}
		}
	}
}

func sameBits(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: y[%d] = %g, want %g", name, i, got[i], want[i])
		}
	}
}
