package bf16

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/parallel"
)

// LeftMatrix is an m×k left factor A of C = A·B converted once to bf16:
// the weights of a convolution ([OutC, InC·KH·KW]) or any fixed matrix.
type LeftMatrix struct {
	m, k   int
	t      *tile
	packed []uint32  // BF16 kernels: pair panels of tile t
	ref    []float32 // fallback: the bf16-rounded values, row-major m×k
}

// PackLeft converts the m×k row-major a (row stride lda) into a LeftMatrix.
func PackLeft(m, k int, a []float32, lda int) *LeftMatrix {
	if m < 0 || k < 0 || (m > 0 && k > 0 && len(a) < (m-1)*lda+k) {
		panic(fmt.Sprintf("bf16.PackLeft: %d×%d matrix with stride %d in %d values", m, k, lda, len(a)))
	}
	l := &LeftMatrix{m: m, k: k}
	if useAsm.Load() {
		l.t = pickTile(m, 0, 0)
		l.packed = packLeft(l.t, m, k, a, lda)
		return l
	}
	l.ref = make([]float32, m*k)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			l.ref[i*k+p] = RoundToFloat32(a[i*lda+p])
		}
	}
	return l
}

// Rows returns m.
func (l *LeftMatrix) Rows() int { return l.m }

// Cols returns k.
func (l *LeftMatrix) Cols() int { return l.k }

// Bytes returns the memory the packed matrix holds.
func (l *LeftMatrix) Bytes() int { return 4*len(l.packed) + 4*len(l.ref) }

// Gemm computes C = A·B (+ bias[i] on row i when bias is not nil) for the
// k×n row-major float32 B (row stride ldb; rounded to bf16) into the m×n
// row-major C (row stride ldc, overwritten), accumulating in float32.
func (l *LeftMatrix) Gemm(n int, b []float32, ldb int, bias []float32, c []float32, ldc int) {
	m, k := l.m, l.k
	if m == 0 || n <= 0 {
		return
	}
	if l.packed == nil {
		tp := getF32(k * n)
		defer poolF32.Put(tp)
		tb := *tp
		parallel.For(k, 16, func(lo, hi int) {
			for p := lo; p < hi; p++ {
				for j, v := range b[p*ldb : p*ldb+n] {
					tb[p*n+j] = RoundToFloat32(v)
				}
			}
		})
		kernels.Sgemm(false, false, m, n, k, 1, l.ref, max(k, 1), tb, n, 0, c, ldc)
		if bias != nil {
			for i := 0; i < m; i++ {
				for j := range c[i*ldc : i*ldc+n] {
					c[i*ldc+j] += bias[i]
				}
			}
		}
		return
	}
	t := l.t
	kp := (k + 1) / 2
	nr := t.nr
	// B as bf16 rows (an odd k gets a zero row), then packed pair by pair.
	bbp := getU16(2*kp*n + nr)
	defer poolU16.Put(bbp)
	bb := *bbp
	parallel.For(k, 16, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			convert(bb[p*n:(p+1)*n], b[p*ldb:p*ldb+n])
		}
	})
	clear(bb[k*n:])
	op := getInts(2 * kp)
	defer intPool.Put(op)
	offs := *op
	for p := range offs {
		offs[p] = p * n
	}
	pack := packPairs[nr]
	B := func(buf []uint32, pc, kcb, jc, nc int) []uint32 {
		for jp := 0; jp*nr < nc; jp++ {
			pack(&buf[jp*kcb*nr], &bb[jc+jp*nr], &offs[2*pc], kcb)
		}
		return buf
	}
	run(t, m, n, kp, aOperand{packed: l.packed}, B, c, ldc, bias, nil)
}

// RightMatrix is a k×n right factor B of C = A·B converted once to bf16,
// given by its transpose (the weight [out, in] of nn.Linear, B = Wᵀ).
type RightMatrix struct {
	n, k   int
	packed []uint32  // BF16 kernels: whole-matrix pair panels of width rightNR
	ref    []float32 // fallback: the bf16-rounded Bᵀ, row-major n×k
}

// rightNR is the panel width of a RightMatrix.
const rightNR = 32

// PackRightT converts B = wᵀ, with w the n×k row-major matrix of row stride
// ldw, into a RightMatrix.
func PackRightT(n, k int, w []float32, ldw int) *RightMatrix {
	if n < 0 || k < 0 || (n > 0 && k > 0 && len(w) < (n-1)*ldw+k) {
		panic(fmt.Sprintf("bf16.PackRightT: %d×%d matrix with stride %d in %d values", n, k, ldw, len(w)))
	}
	r := &RightMatrix{n: n, k: k}
	if useAsm.Load() {
		r.packed = packRightT(rightNR, n, k, w, ldw)
		return r
	}
	r.ref = make([]float32, n*k)
	for j := 0; j < n; j++ {
		for p := 0; p < k; p++ {
			r.ref[j*k+p] = RoundToFloat32(w[j*ldw+p])
		}
	}
	return r
}

// Rows returns k (the rows of B).
func (r *RightMatrix) Rows() int { return r.k }

// Cols returns n.
func (r *RightMatrix) Cols() int { return r.n }

// Bytes returns the memory the packed matrix holds.
func (r *RightMatrix) Bytes() int { return 4*len(r.packed) + 4*len(r.ref) }

// Gemm computes C = A·B (+ bias[j] on column j when bias is not nil) for the
// m×k row-major float32 A (row stride lda; rounded to bf16) into the m×n
// row-major C (row stride ldc, overwritten), accumulating in float32.
func (r *RightMatrix) Gemm(m int, a []float32, lda int, bias []float32, c []float32, ldc int) {
	n, k := r.n, r.k
	if m <= 0 || n == 0 {
		return
	}
	if r.packed == nil {
		tp := getF32(m * k)
		defer poolF32.Put(tp)
		ta := *tp
		parallel.For(m, 16, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				for p, v := range a[i*lda : i*lda+k] {
					ta[i*k+p] = RoundToFloat32(v)
				}
			}
		})
		kernels.Sgemm(false, true, m, n, k, 1, ta, max(k, 1), r.ref, max(k, 1), 0, c, ldc)
		if bias != nil {
			for i := 0; i < m; i++ {
				for j, v := range bias[:n] {
					c[i*ldc+j] += v
				}
			}
		}
		return
	}
	kp := (k + 1) / 2
	np := (n + rightNR - 1) / rightNR
	// A as bf16 pair rows of kp words (an odd k padded with a zero), ld
	// words apart (see pairStride).
	ld := pairStride(kp)
	ap := getU32(m * ld)
	defer poolU32.Put(ap)
	rows := *ap
	parallel.For(m, 16, func(lo, hi int) {
		h := u16(rows)
		for i := lo; i < hi; i++ {
			convert(h[2*i*ld:2*i*ld+k], a[i*lda:i*lda+k])
			if k%2 == 1 {
				h[2*i*ld+k] = 0
			}
		}
	})
	B := func(_ []uint32, pc, kcb, jc, nc int) []uint32 {
		base := pc*np*rightNR + jc/rightNR*kcb*rightNR
		return r.packed[base : base+(nc+rightNR-1)/rightNR*kcb*rightNR]
	}
	t := pickTile(m, rightNR, 0)
	run(t, m, n, kp, aOperand{rows: rows, lda: ld}, B, c, ldc, nil, bias)
}

// pairStride returns the row stride, in words, of kp-word pair rows that
// the micro-kernels read in place: kp, unless rows kp words apart would fall
// in at most two of L1's 64 sets (a multiple of 2 KiB: k = 1024, 2048, 5120,
// 6144), where a 12- or 14-row tile overflows Zen 4's 8 ways; then 16 words
// (a line) more. Best of 7, interleaved, Zen 4: the tagger's fc2 (144×6144
// by 6144→1536) 305 → 418 GFLOP/s, 2048³ 280 → 367–376; SD's ff output
// (256×5120 by 5120→1280) 408 → 410, unchanged.
func pairStride(kp int) int {
	if kp%512 == 0 {
		return kp + 16
	}
	return kp
}
