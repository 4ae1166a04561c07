package kernels

import (
	"math"
	"unsafe"

	"github.com/osediff-go/osediff/parallel"
)

// Vectorised element-wise paths. The assembly loops take whole vectors; the
// last n%w elements go through a zero-padded stack buffer so that tails use
// the very same arithmetic as the body.

const eltGrain = 1 << 15 // elements per parallel chunk of pure streaming ops

// un applies f(x, y, n) to x, y of equal length.
func un(v *vecOps, x, y []float32, f func(x, y *float32, n int)) {
	n := len(x)
	body := n - n%v.w
	if body > 0 {
		f(&x[0], &y[0], body)
	}
	if r := n - body; r > 0 {
		var tx, ty [16]float32
		copy(tx[:], x[body:])
		f(&tx[0], &ty[0], v.w)
		copy(y[body:n], ty[:r])
	}
}

// bin applies f(dst, a, b, n).
func bin(v *vecOps, dst, a, b []float32, f func(dst, a, b *float32, n int)) {
	n := len(dst)
	body := n - n%v.w
	if body > 0 {
		f(&dst[0], &a[0], &b[0], body)
	}
	if r := n - body; r > 0 {
		var ta, tb, td [16]float32
		copy(ta[:], a[body:n])
		copy(tb[:], b[body:n])
		f(&td[0], &ta[0], &tb[0], v.w)
		copy(dst[body:n], td[:r])
	}
}

// parallelUn spreads un over the pool for large slices.
func parallelUn(v *vecOps, x, y []float32, f func(x, y *float32, n int)) {
	parallel.For(len(x), eltGrain, func(lo, hi int) { un(v, x[lo:hi], y[lo:hi], f) })
}

func parallelBin(v *vecOps, dst, a, b []float32, f func(dst, a, b *float32, n int)) {
	a, b = a[:len(dst)], b[:len(dst)]
	parallel.For(len(dst), eltGrain, func(lo, hi int) { bin(v, dst[lo:hi], a[lo:hi], b[lo:hi], f) })
}

// affine sets y = a*x + b (then SiLU when act). With stream, y is written
// with non-temporal stores when it is aligned to a vector (the output is
// not wanted in the caches).
func affine(v *vecOps, x, y []float32, a, b float32, act, stream bool) {
	ai := 0
	if act {
		ai = 1
	}
	if stream && len(y) > 0 && uintptr(unsafe.Pointer(&y[0]))%uintptr(4*v.w) == 0 {
		ai |= 2
	}
	un(v, x, y, func(x, y *float32, n int) { v.affineAct(x, y, n, a, b, ai) })
}

// streamBytes is the output size from which element-wise passes that end
// an operation write with non-temporal stores: beyond the last-level cache
// (32 MiB here) the output cannot wait in it for its reader, and ordinary
// stores first read every line they write. GroupNorm+SiLU over 128×512²
// (134 MB), best of 5 (osediff bench kernels): 9.2 ms, 1.64× the copy's
// time, with ordinary stores; 8.1–8.3 ms, 1.47–1.50×, with streaming ones.
const streamBytes = 32 << 20

// addScalar sets dst = src + s.
func addScalar(dst, src []float32, s float32) {
	v := fast()
	if v == nil {
		for i, x := range src {
			dst[i] = x + s
		}
		return
	}
	un(v, src, dst[:len(src)], func(x, y *float32, n int) { v.scaleAdd(y, x, n, 1, s) })
}

// stats returns mean and 1/sqrt(var+eps) of x (biased variance), computed in
// float64 around a shift (the first element) to avoid cancellation.
func stats(v *vecOps, x []float32, eps float32) (float32, float32) {
	n := len(x)
	shift := x[0]
	s, ss := shiftedSums(v, x, shift)
	m := s / float64(n)
	vr := max(ss/float64(n)-m*m, 0)
	return float32(float64(shift) + m), float32(1 / math.Sqrt(vr+float64(eps)))
}

// shiftedSums returns Σ(x−shift) and Σ(x−shift)² in float64: the vector
// loop over the whole vectors, then the tail.
func shiftedSums(v *vecOps, x []float32, shift float32) (s, ss float64) {
	body := len(x) - len(x)%v.w
	if body > 0 {
		s, ss = v.sumStats(&x[0], body, shift)
	}
	for _, e := range x[body:] {
		d := float64(e) - float64(shift)
		s += d
		ss += d * d
	}
	return s, ss
}

func groupNormFast(v *vecOps, x, y []float32, n, c, hw, groups int, eps float32, gamma, beta []float32, silu bool) {
	cpg := c / groups
	stream := n*c*hw*4 >= streamBytes
	// Groups in chunks taken as workers become free (see parallel.Dynamic):
	// fixed halves waited on a core slowed by another process (128×512²
	// with SiLU: mean 14.8 ms against 7.1, interleaved A/B).
	parallel.Dynamic(n*groups, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			b, g := ng/groups, ng%groups
			base := (b*c + g*cpg) * hw
			cnt := cpg * hw
			if cnt == 0 {
				continue
			}
			mean, inv := stats(v, x[base:base+cnt], eps)
			for ci := 0; ci < cpg; ci++ {
				sc, sh := normScaleShift(gamma, beta, g*cpg+ci, mean, inv)
				off := base + ci*hw
				affine(v, x[off:off+hw], y[off:off+hw], sc, sh, silu, stream)
			}
		}
	})
}

func layerNormFast(v *vecOps, x, y []float32, rows, cols int, eps float32, gamma, beta []float32) {
	if cols == 0 {
		return
	}
	parallel.For(rows, max(1, eltGrain/cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, out := x[r*cols:(r+1)*cols], y[r*cols:(r+1)*cols]
			m, inv := stats(v, row, eps)
			g, b := gamma, beta
			if g == nil || b == nil {
				g, b = onesZeros(cols, g, b)
			}
			body := cols - cols%v.w
			if body > 0 {
				v.normAffine(&row[0], &out[0], &g[0], &b[0], body, m, inv)
			}
			for i := body; i < cols; i++ {
				out[i] = (row[i]-m)*inv*g[i] + b[i]
			}
		}
	})
}

// softmaxRow replaces row by its softmax of scale*row (max-subtracted); it
// returns nothing and leaves an all -Inf row as NaN like the reference.
func softmaxRow(v *vecOps, row []float32) {
	n := len(row)
	if n == 0 {
		return
	}
	mx := rowMax(v, row)
	s := expScaleSum(v, row, 1, mx)
	inv := 1 / s
	un(v, row, row, func(x, y *float32, n int) { v.scaleAdd(y, x, n, inv, 0) })
}

func rowMax(v *vecOps, row []float32) float32 {
	n := len(row)
	body := n - n%v.w
	mx := float32(math.Inf(-1))
	if body > 0 {
		mx = v.maxv(&row[0], body)
	}
	for _, e := range row[body:] {
		mx = max(mx, e)
	}
	return mx
}

// expScaleSum sets row = exp(row*scale - shift) and returns the sum.
func expScaleSum(v *vecOps, row []float32, scale, shift float32) float32 {
	n := len(row)
	body := n - n%v.w
	var s float32
	if body > 0 {
		s = v.expScaleSum(&row[0], body, scale, shift)
	}
	if r := n - body; r > 0 {
		var t [16]float32
		copy(t[:], row[body:])
		v.expScaleSum(&t[0], v.w, scale, shift)
		for _, e := range t[:r] {
			s += e
		}
		copy(row[body:], t[:r])
	}
	return s
}

func softmaxFast(v *vecOps, x []float32, rows, cols int) {
	parallel.For(rows, max(1, eltGrain/max(cols, 1)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			softmaxRow(v, x[r*cols:(r+1)*cols])
		}
	})
}

// onesZeros substitutes 1s for a nil gamma and 0s for a nil beta.
func onesZeros(n int, gamma, beta []float32) ([]float32, []float32) {
	if gamma == nil {
		gamma = make([]float32, n)
		for i := range gamma {
			gamma[i] = 1
		}
	}
	if beta == nil {
		beta = make([]float32, n)
	}
	return gamma, beta
}

// Zip interleaves a and b into dst: dst[2i] = a[i], dst[2i+1] = b[i]
// (len(dst) = 2·len(a) = 2·len(b)).
func Zip(dst, a, b []float32) {
	n := len(a)
	if len(b) != n || len(dst) != 2*n {
		panic("kernels.Zip: lengths")
	}
	i := 0
	if v := fast(); v != nil && v.zip != nil {
		i = n / 16 * 16
		if i > 0 {
			v.zip(&dst[0], &a[0], &b[0], i)
		}
	}
	for ; i < n; i++ {
		dst[2*i], dst[2*i+1] = a[i], b[i]
	}
}
