package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
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
			for _, band := range []int{1, 4 * c.w * (2*c.in + 4*c.out) * 3, 1 << 30} {
				got := conv.ForwardUpsample2x(x, band)
				if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape()) {
					t.Fatalf("%+v: shape %v, want %v", c, got.Shape(), want.Shape())
				}
				// Each output sums 9·InC unit-variance products in another
				// order: a few float32 ulps of their √(9·InC) spread.
				tol := 3e-6 * math.Sqrt(float64(9*c.in))
				close32(t, fmt.Sprintf("%+v f16=%v band %d", c, f16, band), got.Data(), want.Data(), tol)
			}
		}
	}
}
