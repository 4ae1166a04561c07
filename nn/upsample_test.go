package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// TestForwardUpsample2x: the four phase convolutions give conv(upsample2x(x))
// (the rounding of the summed taps aside) at awkward sizes, with bands of
// one row up to the whole image, batches, and float16-held weights.
func TestForwardUpsample2x(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ n, in, out, h, w int }{{1, 1, 1, 1, 1}, {1, 3, 5, 2, 3}, {2, 4, 6, 5, 7}, {1, 8, 16, 9, 17}, {1, 16, 8, 17, 33}, {1, 5, 3, 4, 32}} {
		for _, f16 := range []bool{false, true} {
			conv := NewConv2d(c.in, c.out, 3, 1, 1, true)
			conv.Weight.SetData(randT(r, c.out, c.in, 3, 3).Data())
			conv.Bias.SetData(randT(r, c.out).Data())
			if f16 {
				conv.SetStorage(StoreF16)
			}
			if !conv.CanUpsampleConv() {
				t.Fatalf("%+v: CanUpsampleConv false", c)
			}
			x := randT(r, c.n, c.in, c.h, c.w)
			want := conv.Forward(Upsample2x(x)) // [N, OC, 2h, 2w]
			for _, tc := range []struct{ band, chunk int }{
				{1, 1 << 30}, {4 * c.w * (2*c.in + 4*c.out) * 3, 1 << 30}, {1 << 30, 1 << 30},
				{1 << 30, 1}, {4 * c.w * (2*c.in + 4*c.out) * 3, 16 * 4 * c.in * 3}, // chunks of 1 and 3 output channels
			} {
				band := tc.band
				prev := phaseChunkBytes
				phaseChunkBytes = tc.chunk
				got := conv.ForwardUpsample2x(x, band)
				phaseChunkBytes = prev
				if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape()) {
					t.Fatalf("%+v: shape %v, want %v", c, got.Shape(), want.Shape())
				}
				// Each output sums 9·InC unit-variance products in another
				// order: a few float32 ulps of their √(9·InC) spread.
				tol := 3e-6 * math.Sqrt(float64(9*c.in))
				close32(t, fmt.Sprintf("%+v f16=%v band %d chunk %d", c, f16, band, tc.chunk), got.Data(), want.Data(), tol)
			}
		}
	}
}

// TestPhaseWeights: the unrolled phase weights equal the loop over
// upsampleTapRows bit for bit (signed zeros included), for float32 and
// float16 weights and any range of output channels.
func TestPhaseWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const outC, inC = 7, 5
	w := make([]float32, outC*inC*9)
	for i := range w {
		w[i] = float32(r.NormFloat64())
		if i%11 == 3 {
			w[i] = float32(math.Copysign(0, -1))
		}
	}
	want := func(w []float32, o, c, q, u, v int) float32 {
		a, b := q/2, q%2
		var s float32
		for _, rr := range upsampleTapRows[a][u] {
			for _, cc := range upsampleTapRows[b][v] {
				s += w[(o*inC+c)*9+rr*3+cc]
			}
		}
		return s
	}
	h := make([]uint16, len(w))
	wh := make([]float32, len(w))
	for i, v := range w {
		h[i] = tensor.F32ToF16(v)
		wh[i] = tensor.F16ToF32(h[i])
	}
	for _, f16 := range []bool{false, true} {
		m, ref := kernels.F32(w), w
		if f16 {
			m, ref = kernels.Mat{F16: h}, wh
		}
		for _, rg := range [][2]int{{0, outC}, {2, 3}, {1, 6}} {
			o0, o1 := rg[0], rg[1]
			n := o1 - o0
			dst := make([]float32, 4*n*inC*4)
			phaseWeights(dst, m, inC, o0, o1)
			for q := 0; q < 4; q++ {
				for o := 0; o < n; o++ {
					for c := 0; c < inC; c++ {
						for u := 0; u < 2; u++ {
							for v := 0; v < 2; v++ {
								got := dst[((q*n+o)*inC+c)*4+u*2+v]
								if e := want(ref, o0+o, c, q, u, v); math.Float32bits(got) != math.Float32bits(e) {
									t.Fatalf("f16=%v channels %v phase %d [%d][%d][%d][%d] = %v, want %v", f16, rg, q, o, c, u, v, got, e)
								}
							}
						}
					}
				}
			}
		}
	}
}
