package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Moments against the reference MeanVar: both are float64 computations of
// the same two quantities, so they agree far below float32 precision
// (1e-12 relative for the mean, 1e-10 for the variance), also where the
// mean is large against the spread (a one-pass E[x²]−E[x]² would not).
func TestMomentsMatchesMeanVar(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	sizes := append(append([]int(nil), awkward...), 1000, 4099, 1<<16+3)
	for _, l := range levels() {
		for _, n := range sizes {
			for _, c := range []struct{ off, scale float64 }{{0, 1}, {1000, 0.01}, {-3, 50}} {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(c.off + c.scale*r.NormFloat64())
				}
				wm, wv := MeanVar(x)
				var gm, gv float64
				withISA(t, l, func() { gm, gv = Moments(x) })
				name := fmt.Sprintf("%v n=%d off=%g scale=%g", l, n, c.off, c.scale)
				if math.Abs(gm-wm) > 1e-12*(math.Abs(wm)+c.scale) {
					t.Errorf("%s: mean %.17g, want %.17g", name, gm, wm)
				}
				if math.Abs(gv-wv) > 1e-10*wv {
					t.Errorf("%s: variance %.17g, want %.17g", name, gv, wv)
				}
			}
		}
	}
}
