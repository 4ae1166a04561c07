package bf16

import (
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// tile is one register-tile micro-kernel: C[mr×nr] (+)= A·B over kp k-pairs,
// A packed [kp][mr] (kp) or strided rows of lda words (ks), B packed
// [kp][nr]; flags bit 0 adds C; a non-nil rbias adds rbias[i] to row i,
// a non-nil cbias adds cbias[j] to column j.
type tile struct {
	name   string
	mr, nr int
	eff    float64 // relative speed of the kernel, for the choice of a tile
	kp, ks func(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)
}

var (
	hasAsm    bool // the CPU and build have the BF16 kernels
	useAsm    atomic.Bool
	tiles     []*tile
	packPairs map[int]func(dst *uint32, src *uint16, offs *int, kp int)
	cvtRowAsm func(dst *uint16, src *float32, n int)
)

// Blocking: a block of kcPairs k-pairs × ncCols columns of packed B per
// worker (256 KiB with the defaults) stays in L2 while every row panel of A
// runs over it.
var (
	jpOuter = true // B panel in L1, A panels from L2 (measured better on a noisy machine)
	kcPairs = 128
	ncCols  = 512
)

// Available reports whether the CPU (and the build) has the AVX-512 BF16
// kernels.
func Available() bool { return hasAsm }

// Enabled reports whether new packed operands use the BF16 kernels.
func Enabled() bool { return useAsm.Load() }

// SetEnabled selects the BF16 kernels (on, clamped to Available) or the
// float32 fallback for operands packed from now on, and returns the previous
// setting. Meant for tests and benchmarks.
func SetEnabled(on bool) bool { return useAsm.Swap(on && hasAsm) }

// Round converts f to bfloat16 with round to nearest even, NaN kept NaN and
// denormal inputs flushed to a signed zero: bit for bit what VCVTNE2PS2BF16
// does (the test checks it against the instruction).
func Round(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	if b&0x7f800000 == 0 {
		return uint16(b>>16) & 0x8000
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Widen converts a bfloat16 to float32 exactly.
func Widen(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// RoundToFloat32 is Widen(Round(f)): f rounded to the nearest bfloat16 value.
func RoundToFloat32(f float32) float32 { return Widen(Round(f)) }

// convert writes dst[i] = Round(src[i]).
func convert(dst []uint16, src []float32) {
	n := min(len(dst), len(src))
	i := 0
	if cvtRowAsm != nil && n >= 32 {
		i = n &^ 31
		cvtRowAsm(&dst[0], &src[0], i)
	}
	for ; i < n; i++ {
		dst[i] = Round(src[i])
	}
}

// pickTile returns the tile for m rows among those of width nr (any width
// when nr is 0), preferring one whose width divides ow (when ow > 0): the
// fewest padded rows per unit of kernel speed.
func pickTile(m, nr, ow int) *tile {
	var best *tile
	bestCost := math.Inf(1)
	for pass := 0; pass < 2 && best == nil; pass++ {
		for _, t := range tiles {
			if nr != 0 && t.nr != nr {
				continue
			}
			if pass == 0 && ow > 0 && ow%t.nr != 0 {
				continue
			}
			cost := float64((m+t.mr-1)/t.mr*t.mr) / t.eff
			if cost < bestCost {
				best, bestCost = t, cost
			}
		}
	}
	return best
}

// aOperand is the left factor: pre-packed panels (packed[pc*mp*mr +
// ip*kcb*mr + p*mr + i] for the block of pairs starting at pc, kcb pairs
// long) or bf16 pair rows read in place (rows[i*lda+p]).
type aOperand struct {
	packed []uint32
	rows   []uint32
	lda    int
}

// bSource returns the packed block of B for pairs [pc, pc+kcb) and columns
// [jc, jc+nc): panel jp at [jp*kcb*nr:], element p*nr+j. It may fill buf
// (len kcb*ceil(nc/nr)*nr) or return memory of its own.
type bSource func(buf []uint32, pc, kcb, jc, nc int) []uint32

var (
	poolU32 sync.Pool
	poolF32 sync.Pool
	poolU16 sync.Pool
)

func getU32(n int) *[]uint32 {
	if p, ok := poolU32.Get().(*[]uint32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	f := tensor.Alloc(n)
	s := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(f))), n)
	return &s
}

func getF32(n int) *[]float32 {
	if p, ok := poolF32.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := tensor.Alloc(n)
	return &s
}

func getU16(n int) *[]uint16 {
	if p, ok := poolU16.Get().(*[]uint16); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	f := tensor.Alloc((n + 1) / 2)
	s := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(f))), n)
	return &s
}

// u16 views a []uint32 as its bf16 halves.
func u16(s []uint32) []uint16 {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&s[0])), 2*len(s))
}

// run computes C = A·B (+ rbias[i] on row i, + cbias[j] on column j) for m×n
// C (row stride ldc) over kp k-pairs, split over the worker pool along N
// (or M when N is narrow).
func run(t *tile, m, n, kp int, A aOperand, B bSource, c []float32, ldc int, rbias, cbias []float32) {
	runAcc(t, m, n, kp, A, B, c, ldc, rbias, cbias, false)
}

// runAcc is run, adding to C instead when acc is set.
func runAcc(t *tile, m, n, kp int, A aOperand, B bSource, c []float32, ldc int, rbias, cbias []float32, acc bool) {
	if m <= 0 || n <= 0 {
		return
	}
	if kp == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				var v float32
				if acc {
					v = row[j]
				}
				if rbias != nil {
					v += rbias[i]
				}
				if cbias != nil {
					v += cbias[j]
				}
				row[j] = v
			}
		}
		return
	}
	mr, nr := t.mr, t.nr
	mp := (m + mr - 1) / mr
	np := (n + nr - 1) / nr
	workers := parallel.Threads()
	if m*n*kp < 1<<15 {
		workers = 1
	}
	splitN := np >= 2*workers || mp < workers
	items := mp
	if splitN {
		items = np
	}
	workers = min(workers, items)
	parallel.Run(workers, func(w, nw int) {
		lo, hi := w*items/nw, (w+1)*items/nw
		i0, i1, j0, j1 := 0, mp, 0, n
		if splitN {
			j0, j1 = lo*nr, min(hi*nr, n)
		} else {
			i0, i1 = lo, hi
		}
		if i0 < i1 && j0 < j1 {
			block(t, m, kp, mp, i0, i1, j0, j1, A, B, c, ldc, rbias, cbias, acc)
		}
	})
}

// block runs row panels [i0,i1) × columns [j0,j1) on the calling goroutine.
func block(t *tile, m, kp, mp, i0, i1, j0, j1 int, A aOperand, B bSource, c []float32, ldc int, rbias, cbias []float32, acc bool) {
	mr, nr := t.mr, t.nr
	kcMax := min(kcPairs, kp)
	ncb := max(nr, ncCols/nr*nr)
	ncMax := min(ncb, (j1-j0+nr-1)/nr*nr)
	bufp := getU32(kcMax*ncMax + kcMax*mr)
	defer poolU32.Put(bufp)
	bbuf := (*bufp)[:kcMax*ncMax]
	apart := (*bufp)[kcMax*ncMax:]
	fp := getF32(mr*nr + 2*mr + nr)
	defer poolF32.Put(fp)
	tmp := (*fp)[:mr*nr]
	rpart := (*fp)[mr*nr : mr*nr+mr]
	cpart := (*fp)[mr*nr+mr : mr*nr+mr+nr]
	for jc := j0; jc < j1; jc += ncb {
		nc := min(ncb, j1-jc)
		for pc := 0; pc < kp; pc += kcPairs {
			kcb := min(kcPairs, kp-pc)
			bp := B(bbuf[:kcb*((nc+nr-1)/nr*nr)], pc, kcb, jc, nc)
			flags := 0
			if pc > 0 || acc {
				flags = 1
			}
			// The partial row panel of a strided A (at most one: the last).
			if A.packed == nil && m-(i1-1)*mr < mr {
				ip, rows := i1-1, m-(i1-1)*mr
				clear(apart[:kcb*mr])
				for r := 0; r < rows; r++ {
					src := A.rows[(ip*mr+r)*A.lda+pc : (ip*mr+r)*A.lda+pc+kcb]
					for p, v := range src {
						apart[p*mr+r] = v
					}
				}
			}
			// Column panels outside, row panels inside: the B panel stays in
			// L1 while the A panels stream from L2.
			npb, nip := (nc+nr-1)/nr, i1-i0
			for it := 0; it < npb*nip; it++ {
				jp, ip := it/nip, i0+it%nip
				if !jpOuter {
					jp, ip = it%npb, i0+it/npb
				}
				cols := min(nr, nc-jp*nr)
				cj := jc + jp*nr
				var cb *float32
				if cbias != nil && pc == 0 {
					if cols == nr {
						cb = &cbias[cj]
					} else {
						clear(cpart)
						copy(cpart, cbias[cj:cj+cols])
						cb = &cpart[0]
					}
				}
				{
					rows := min(mr, m-ip*mr)
					kern, lda := t.kp, 0
					var ap *uint32
					switch {
					case A.packed != nil:
						ap = &A.packed[pc*mp*mr+ip*kcb*mr]
					case rows == mr:
						ap, kern, lda = &A.rows[ip*mr*A.lda+pc], t.ks, A.lda
					default:
						ap = &apart[0]
					}
					var rb *float32
					if rbias != nil && pc == 0 {
						if rows == mr {
							rb = &rbias[ip*mr]
						} else {
							clear(rpart)
							copy(rpart, rbias[ip*mr:ip*mr+rows])
							rb = &rpart[0]
						}
					}
					if rows == mr && cols == nr {
						kern(kcb, ap, lda, &bp[jp*kcb*nr], &c[ip*mr*ldc+cj], ldc, flags, rb, cb)
						continue
					}
					kern(kcb, ap, lda, &bp[jp*kcb*nr], &tmp[0], nr, 0, rb, cb)
					for r := 0; r < rows; r++ {
						crow := c[(ip*mr+r)*ldc+cj : (ip*mr+r)*ldc+cj+cols]
						tr := tmp[r*nr : r*nr+cols]
						if flags == 1 {
							for i := range crow {
								crow[i] += tr[i]
							}
						} else {
							copy(crow, tr)
						}
					}
				}
			}
		}
	}
}

// packLeft packs the m×k row-major float32 a (row stride lda) into the
// aOperand panel layout of tile t (bf16 pairs, rows past m and the pair
// partner of an odd k zero).
func packLeft(t *tile, m, k int, a []float32, lda int) []uint32 {
	mr := t.mr
	mp := (m + mr - 1) / mr
	kp := (k + 1) / 2
	dst := make([]uint32, mp*mr*kp)
	parallel.For(mp, 1, func(lo, hi int) {
		for pc := 0; pc < kp; pc += kcPairs {
			kcb := min(kcPairs, kp-pc)
			for ip := lo; ip < hi; ip++ {
				d := dst[pc*mp*mr+ip*kcb*mr : pc*mp*mr+(ip+1)*kcb*mr]
				for r := 0; r < mr; r++ {
					i := ip*mr + r
					if i >= m {
						for p := 0; p < kcb; p++ {
							d[p*mr+r] = 0
						}
						continue
					}
					row := a[i*lda : i*lda+k]
					for p := 0; p < kcb; p++ {
						kk := 2 * (pc + p)
						v := uint32(Round(row[kk]))
						if kk+1 < k {
							v |= uint32(Round(row[kk+1])) << 16
						}
						d[p*mr+r] = v
					}
				}
			}
		}
	})
	return dst
}

// packRightT packs B = wᵀ (w is n×k row-major, row stride ldw: B(p,j) =
// w[j*ldw+p]) into whole-matrix panels of width nr: block pc at pc*np*nr,
// panel jp at + jp*kcb*nr, element p*nr+j (columns past n zero).
func packRightT(nr, n, k int, w []float32, ldw int) []uint32 {
	np := (n + nr - 1) / nr
	kp := (k + 1) / 2
	dst := make([]uint32, np*nr*kp)
	parallel.For(np, 1, func(lo, hi int) {
		for pc := 0; pc < kp; pc += kcPairs {
			kcb := min(kcPairs, kp-pc)
			for jp := lo; jp < hi; jp++ {
				d := dst[pc*np*nr+jp*kcb*nr : pc*np*nr+(jp+1)*kcb*nr]
				for jj := 0; jj < nr; jj++ {
					j := jp*nr + jj
					if j >= n {
						for p := 0; p < kcb; p++ {
							d[p*nr+jj] = 0
						}
						continue
					}
					row := w[j*ldw : j*ldw+k]
					for p := 0; p < kcb; p++ {
						kk := 2 * (pc + p)
						v := uint32(Round(row[kk]))
						if kk+1 < k {
							v |= uint32(Round(row[kk+1])) << 16
						}
						d[p*nr+jj] = v
					}
				}
			}
		}
	})
	return dst
}
