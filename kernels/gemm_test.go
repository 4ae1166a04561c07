package kernels

import (
	"fmt"
	"github.com/osediff-go/osediff/tensor"
	"math"
	"math/rand/v2"
	"testing"
)

// levels returns the ISA levels this machine can run (both fast paths on an
// AVX-512 machine, plus the reference).
func levels() []ISA {
	var ls []ISA
	for l := Generic; l <= DetectedISA(); l++ {
		if l == Generic || gemmArchs[l] != nil {
			ls = append(ls, l)
		}
	}
	return ls
}

// withISA runs f at level l and restores the previous level.
func withISA(t testing.TB, l ISA, f func()) {
	prev := SetISA(l)
	defer SetISA(prev)
	f()
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// closeRel reports the first index where got and want differ by more than
// tol*(scale) with scale = max(|want|, floor).
func firstDiff(got, want []float32, tol, floor float64) (int, float64) {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(want[i])) || d > tol*math.Max(math.Abs(float64(want[i])), floor) {
			return i, d
		}
	}
	return -1, 0
}

var awkward = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 33, 63, 65, 127, 257}

// Sgemm tolerance: |got-want| <= 1e-5 * (sum_p |A(i,p)||B(p,j)| + |beta c|),
// the float32 summation-order bound for k up to ~300 with unit normal data.
func TestSgemmConformance(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	type tc struct {
		m, n, k     int
		ta, tb      bool
		alpha, beta float32
		off         int
	}
	var cases []tc
	for _, s := range awkward {
		cases = append(cases, tc{s, s, s, false, false, 1, 0, 0})
		cases = append(cases, tc{s, 17, 33, true, false, 1, 0.5, 1})
		cases = append(cases, tc{33, s, 9, false, true, -0.7, 1, 3})
		cases = append(cases, tc{15, 31, s, true, true, 2, -1, 1})
	}
	cases = append(cases, tc{130, 300, 600, false, false, 1, 0, 0}, tc{257, 65, 513, false, true, 1, 1, 2}, tc{29, 1100, 270, true, false, 1.5, 0, 0},
		// Row strides of A that alias in L1 (multiples of 8 KiB): A copied to
		// another stride.
		tc{31, 257, 65, false, false, 1, 0, 2048 - 65}, tc{33, 300, 100, false, false, 1, 0.5, 4096 - 100})
	for _, l := range levels()[1:] {
		for _, c := range cases {
			name := fmt.Sprintf("%v/%dx%dx%d/ta=%v/tb=%v/a=%g/b=%g/off=%d", l, c.m, c.n, c.k, c.ta, c.tb, c.alpha, c.beta, c.off)
			lda, ldb, ldc := c.k+c.off, c.n+c.off, c.n+2*c.off
			if c.ta {
				lda = c.m + c.off
			}
			if c.tb {
				ldb = c.k + c.off
			}
			a := randSlice(r, c.off+max(c.m, c.k)*lda+1)[c.off:]
			b := randSlice(r, c.off+max(c.n, c.k)*ldb+1)[c.off:]
			c0 := randSlice(r, c.off+c.m*ldc+1)[c.off:]
			if c.beta == 0 {
				for i := range c0 {
					c0[i] = float32(math.NaN())
				}
			}
			want := append([]float32(nil), c0...)
			got := append([]float32(nil), c0...)
			sgemmRef(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, want, ldc)
			withISA(t, l, func() { Sgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, got, ldc) })
			for i := 0; i < c.m; i++ {
				for j := 0; j < c.n; j++ {
					g, w := got[i*ldc+j], want[i*ldc+j]
					if d := math.Abs(float64(g - w)); !(d <= 1e-5*float64(c.k+1)*3) {
						t.Fatalf("%s: C[%d,%d] = %g, want %g", name, i, j, g, w)
					}
				}
				// Padding between rows untouched.
				for j := c.n; j < ldc && i*ldc+j < len(got); j++ {
					if g, w := got[i*ldc+j], want[i*ldc+j]; !(g == w || g != g && w != w) {
						t.Fatalf("%s: padding C[%d,%d] changed", name, i, j)
					}
				}
			}
		}
	}
}

// TestPickArchA: an A read in place with a stride that is a multiple of 8 KiB
// never gets a tile of more than 12 rows (they alias in L1) unless it is
// copied to another stride first (float32, n >= gemmPackAMinN); other
// strides, and a
// transposed A (packed), keep pickArchMN's choice.
func TestPickArchA(t *testing.T) {
	for _, l := range levels()[1:] {
		withISA(t, l, func() {
			small := false
			for _, a := range gemmArchs[l] {
				small = small || a.mr <= 12
			}
			for _, c := range []struct {
				m, n, lda   int
				trans, half bool
			}{{2048, 2048, 2048, false, false}, {2048, 2048, 2048, false, true}, {2048, 2048, 2064, false, false}, {2048, 2048, 2048, true, false},
				{4096, 1536, 6144, false, false}, {4096, 1536, 6144, false, true}, {4096, 320, 320, false, false}, {14, 64, 4096, false, false}} {
				got, def := pickArchA(c.m, c.n, 64, c.lda, c.trans, c.half), pickArchMN(c.m, c.n)
				aliased := c.lda%2048 == 0 && !c.trans && (c.half || c.n < gemmPackAMinN)
				switch {
				case aliased && small && got.mr > 12:
					t.Errorf("%v %+v: %s, want at most 12 rows", l, c, got.name)
				case (!aliased || def.mr <= 12) && got != def:
					t.Errorf("%v %+v: %s, want pickArchMN's %s", l, c, got.name, def.name)
				}
			}
		})
	}
}

// TestPackTransposed: the transposing B packer (packT512, packTH512) gives the
// scalar loop's panels, float32 and float16, at awkward k blocks, row
// strides and panel offsets, with the partial last panel and k tails.
func TestPackTransposed(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, l := range levels()[1:] {
		withISA(t, l, func() {
			v := fast()
			for _, ar := range gemmArchs[l] {
				for _, c := range []struct{ n, k, ld, pc, kc int }{
					{ar.nr, 16, 16, 0, 16}, {ar.nr, 17, 19, 0, 17}, {2*ar.nr + 5, 300, 301, 0, 256}, {2 * ar.nr, 300, 333, 256, 44},
					{ar.nr, 33, 33, 1, 31}, {3 * ar.nr, 64, 65, 0, 63}, {ar.nr + 1, 257, 257, 0, 257}, {ar.nr, 15, 15, 0, 15},
				} {
					w := randSlice(r, c.n*c.ld)
					h := make([]uint16, len(w))
					for i, x := range w {
						h[i] = tensor.F32ToF16(x)
					}
					for _, m := range []Mat{F32(w), {F16: h}} {
						np := (c.n + ar.nr - 1) / ar.nr
						got, want := make([]float32, np*c.kc*ar.nr), make([]float32, np*c.kc*ar.nr)
						matB(ar, m, c.ld, c.n, true, 1)(got, c.pc, c.kc, 0, c.n)
						pt, pth := v.packT, v.packTH
						v.packT, v.packTH = nil, nil
						matB(ar, m, c.ld, c.n, true, 1)(want, c.pc, c.kc, 0, c.n)
						v.packT, v.packTH = pt, pth
						for i := range want {
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("%s %+v f16=%v: panel value %d = %g, want %g", ar.name, c, m.F16 != nil, i, got[i], want[i])
							}
						}
					}
				}
			}
		})
	}
}

// TestRestride: an A whose row stride aliases in L1 (a multiple of 4 KiB
// with a large A, of 8 KiB always) is copied to another stride first; the
// products equal the reference at awkward sizes, with the size threshold
// lowered so that small products take the copy.
func TestRestride(t *testing.T) {
	defer func(v int) { restrideMinA = v }(restrideMinA)
	r := rand.New(rand.NewPCG(13, 14))
	for _, l := range levels()[1:] {
		for _, minA := range []int{0, 1 << 40} {
			restrideMinA = minA
			for _, c := range []struct{ m, n, k, lda int }{{37, 257, 100, 1024}, {15, 300, 1024, 1024}, {29, 256, 65, 3072}, {14, 260, 33, 2048}} {
				if !restrideAliased(c.m, c.n, c.k, c.lda, false) && minA == 0 {
					t.Fatalf("%+v: not copied with the threshold at 0", c)
				}
				if ld := unaliasedStride(c.k); ld < c.k || ld%1024 == 0 {
					t.Fatalf("%+v: copied to stride %d, which aliases", c, ld)
				}
				a := randSlice(r, c.m*c.lda)
				b := randSlice(r, c.k*c.n)
				want, got := make([]float32, c.m*c.n), make([]float32, c.m*c.n)
				sgemmRef(false, false, c.m, c.n, c.k, 1, a, c.lda, b, c.n, 0, want, c.n)
				withISA(t, l, func() { Sgemm(false, false, c.m, c.n, c.k, 1, a, c.lda, b, c.n, 0, got, c.n) })
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-5*float64(c.k+1)*3) {
						t.Fatalf("%v %+v minA=%d: C[%d] = %g, want %g", l, c, minA, i, got[i], want[i])
					}
				}
			}
		}
	}
}
