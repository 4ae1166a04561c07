package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// TestNarrowProducts covers the orders of narrow products (see deepOrder
// and gemmSplitMRule): at both ISA levels and with 1 to 3 workers, GEMMs
// (float32 and float16 A, bias, accumulation) and convolutions at the
// UNet's small sizes (8×8: B packed whole and shared by workers split along
// M; 16×16: split along M by the rule; 32 wide and a few rows: B read in
// place) give bit for bit what they give with
// both orders off, and match the reference within 1e-5 of the summed
// magnitudes (sum of |a||b| over k, plus |bias| and |c| where added).
func TestNarrowProducts(t *testing.T) {
	defer parallel.SetThreads(parallel.Threads())
	defer func(d, s bool) { gemmDeep, gemmSplitMRule = d, s }(gemmDeep, gemmSplitMRule)
	r := rand.New(rand.NewPCG(11, 12))
	type tc struct {
		name string
		n    int
		f    func(out []float32)
		ref  func(out []float32)
		tol  func(i int) float64 // allowed |got-ref| at element i
	}
	var cases []tc
	// GEMMs: m × n × k with n narrow (at most gemmDeepCols per worker) and
	// k over several k blocks; and n = 256 with tall m (the split rule).
	for _, s := range [][3]int{{300, 64, 700}, {257, 33, 513}, {230, 96, 300}, {17, 65, 1030}, {240, 256, 600}, {500, 128, 257}} {
		m, n, k := s[0], s[1], s[2]
		a, b, bias := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m)
		h := make([]uint16, len(a))
		af := make([]float32, len(a)) // a as float16 holds it
		for i, v := range a {
			h[i] = tensor.F32ToF16(v)
			af[i] = tensor.F16ToF32(h[i])
		}
		c0 := make([]float32, m*n)
		for i := range c0 {
			c0[i] = float32(i%5) - 2
		}
		bound := func(a []float32, acc bool) func(i int) float64 {
			var tol []float64 // computed on first use
			return func(i int) float64 {
				if tol == nil {
					tol = make([]float64, m*n)
					for j := range tol {
						row, col := j/n, j%n
						s := 0.0
						for p := 0; p < k; p++ {
							s += math.Abs(float64(a[row*k+p]) * float64(b[p*n+col]))
						}
						if acc {
							s += math.Abs(float64(c0[j])) + math.Abs(float64(bias[row]))
						}
						tol[j] = 1e-5 * s
					}
				}
				return tol[i]
			}
		}
		cases = append(cases,
			tc{fmt.Sprintf("sgemm_%dx%dx%d", m, n, k), m * n,
				func(c []float32) { Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n) },
				func(c []float32) { sgemmRef(false, false, m, n, k, 1, a, k, b, n, 0, c, n) },
				bound(a, false)},
			tc{fmt.Sprintf("gemm_f16_bias_acc_%dx%dx%d", m, n, k), m * n,
				func(c []float32) {
					copy(c, c0)
					ar := pickArchMN(m, n)
					gemmRun(ar, m, n, k, aSource{h: h, lda: k}, matrixB(ar, b, n, n, false, 1), c, n, true, bias)
				},
				func(c []float32) {
					copy(c, c0)
					sgemmRef(false, false, m, n, k, 1, af, k, b, n, 1, c, n)
					for i := range c {
						c[i] += bias[i/n]
					}
				},
				bound(af, true)})
	}
	// Convolutions at 8×8 and 16×16 (no tile width divides the output
	// width: B is packed), 3×3 with enough channels for several k blocks.
	// And 32 pixels wide with 2 and 4 rows: B read in place by the indirect
	// kernels (split by rows, and by columns with 64 per worker).
	for _, s := range [][4]int{{40, 300, 8, 8}, {64, 240, 16, 16}, {30, 17, 8, 8}, {40, 300, 2, 32}, {64, 240, 4, 32}} {
		ch, oc, hh, ww := s[0], s[1], s[2], s[3]
		p := Conv2DParams{InC: ch, OutC: oc, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		x, w, bias := randSlice(r, ch*hh*ww), randSlice(r, oc*ch*9), randSlice(r, oc)
		// The summed magnitudes: the reference on |x|, |w| and |bias|.
		abs := func(s []float32) []float32 {
			a := make([]float32, len(s))
			for i, v := range s {
				a[i] = float32(math.Abs(float64(v)))
			}
			return a
		}
		mag := make([]float32, oc*hh*ww)
		conv2DRef(p, 1, hh, ww, abs(x), abs(w), abs(bias), mag)
		cases = append(cases, tc{fmt.Sprintf("conv_%d_%d_%dx%d", ch, oc, hh, ww), oc * hh * ww,
			func(y []float32) { Conv2DEx(p, 1, hh, ww, x, F32(w), bias, y, ConvOptions{}) },
			func(y []float32) { conv2DRef(p, 1, hh, ww, x, w, bias, y) },
			func(i int) float64 { return 1e-5 * float64(mag[i]) }})
	}
	for _, l := range levels()[1:] {
		for _, threads := range []int{1, 2, 3} {
			parallel.SetThreads(threads)
			for _, c := range cases {
				name := fmt.Sprintf("%v/%d workers/%s", l, threads, c.name)
				var want, got, ref []float32
				withISA(t, l, func() {
					gemmDeep, gemmSplitMRule = false, false
					want = make([]float32, c.n)
					c.f(want)
					gemmDeep, gemmSplitMRule = true, true
					got = make([]float32, c.n)
					c.f(got)
				})
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: element %d = %v in the narrow orders, %v without", name, i, got[i], want[i])
					}
				}
				ref = make([]float32, c.n)
				c.ref(ref)
				for i := range ref {
					if d := math.Abs(float64(got[i]) - float64(ref[i])); !(d <= c.tol(i)) {
						t.Fatalf("%s: element %d = %v, reference %v (tolerance %.3g)", name, i, got[i], ref[i], c.tol(i))
					}
				}
			}
		}
	}
}
