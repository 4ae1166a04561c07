package kernels

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// Blocking of the packed GEMM (Goto/BLIS style): a kc×nc panel of B is
// packed per worker and stays in L2; A is read as mr-row panels (packed or
// straight from row-major memory); the micro-kernel keeps an mr×nr tile of C
// in registers.
var (
	gemmKC = 256
	gemmNC = 512
	// gemmPackA packs a row-major A into panels once per call when the
	// product has at least gemmPackAMinN columns. Off: on Zen 5 the strided
	// micro-kernel reads A in place at the packed kernel's speed (see
	// BenchmarkMicroKernelL2) and packing cost 5-30% on conv-sized products.
	gemmPackA     = false
	gemmPackAMinN = 256
	// gemmPrefetchA prefetches the next row panel of an A read in place
	// while the last B panel of the current one runs.
	gemmPrefetchA = true
)

// aSource is the A operand of gemmRun: either pre-packed panels
// (packed[pc*mp*mr + ip*kc*mr + p*mr + i], mp = ceil(m/mr)), row-major
// memory read in place (A(i,p) = a[i*lda+p]), or row-major float16 (A(i,p)
// = h[i*lda+p]) widened an mr×kc panel at a time.
type aSource struct {
	packed []float32
	a      []float32
	h      []uint16
	lda    int
}

// matA is the aSource of a row-major Mat.
func matA(m Mat, lda int) aSource {
	if m.F16 != nil {
		return aSource{h: m.F16, lda: lda}
	}
	return aSource{a: m.F32, lda: lda}
}

// bPacker fills dst[jp*kc*nr + p*nr + j] = B(pc+p, j0+jp*nr+j) for p < kc and
// the columns [j0, j0+nc), zero (or anything finite) past the last column.
type bPacker func(dst []float32, pc, kc, j0, nc int)

// bSource is the B operand of gemmRunB: packed block by block by pack, or,
// when direct is set and the tile has an indirect micro-kernel (ki), read in
// place: the nr-wide panel at column j0 (a multiple of nr) is
// B(p, j0+j) = b[offs[p]+j] with b = direct(j0), for j < nr. direct requires
// n to be a multiple of nr and A not pre-packed; pack must still be set (it
// serves the other cases). Both give the same bits.
type bSource struct {
	pack   bPacker
	direct func(j0 int) *float32
	offs   []int
	// whole, when set, is B packed whole for the narrow products' order (see
	// gemmBlock): k block pc at whole[pc*ncp:], all n columns (ncp of them,
	// rounded up to nr).
	whole []float32
}

// gemmDirectB enables the direct (indirect-B micro-kernel) path of bSource;
// off, every B is packed (for A/B measurements and tests).
var gemmDirectB = true

// scratch pools, keyed by nothing: buffers grow as needed.
var scratchPool sync.Pool

func getScratch(n int) *[]float32 {
	if p, ok := scratchPool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := tensor.Alloc(n)
	return &s
}

func putScratch(p *[]float32) { scratchPool.Put(p) }

// pickArchMN returns the tile of the current level that pads an m×n product
// the least (m rounded up to mr times n rounded up to nr; a tie goes to the
// earlier, default tile). pickArch(m) looks at the rows only: for m a
// multiple of 8 it took the 8×48 tile, whose 48 columns pad the UNet's
// n = 320 and 640 by 5%; on the UNet's Linear shapes (4096×320×320,
// 4096×320×1280, 1024×640×640) the 14×32 tile ran 4–7% faster, one thread.
func pickArchMN(m, n int) *gemmArch { return pickArchRows(m, n, 0) }

// pickArchRows is pickArchMN among the tiles of at most maxRows rows (0: any);
// nil when there is none.
func pickArchRows(m, n, maxRows int) *gemmArch {
	var best *gemmArch
	bc := 0
	for _, a := range gemmArchs[CurrentISA()] {
		if maxRows > 0 && a.mr > maxRows {
			continue
		}
		c := (m + a.mr - 1) / a.mr * a.mr * ((n + a.nr - 1) / a.nr * a.nr)
		if best == nil || c < bc {
			best, bc = a, c
		}
	}
	return best
}

// pickArchA is pickArchMN for an A read in place with row stride lda (not
// transposed; half: float16): a stride that is a multiple of 8 KiB
// (aliasedStride) puts every row of a tile in the same L1 set, and a 14-row
// tile then exceeds Zen 5's 12 ways. There, at n = 2048, lda 2048, the
// 14×32 tile ran 3–25% slower than at lda 2064 (two threads, interleaved)
// while the 8×48 tile was unaffected; so such strides take the best tile of
// at most 12 rows, unless A is first copied to another stride
// (restrideAliased), which lifts the limit.
func pickArchA(m, n, k, lda int, transA, half bool) *gemmArch {
	ar := pickArchMN(m, n)
	if ar == nil || transA || !aliasedStride(lda) || ar.mr <= 12 || restrideAliased(m, n, k, lda, half) {
		return ar
	}
	if best := pickArchRows(m, n, 12); best != nil {
		return best
	}
	return ar
}

// aliasedStride reports whether rows lda floats apart fall in the same L1
// set: Zen 4's and Zen 5's L1 have 64 sets of 64-byte lines, so rows a
// multiple of 4 KiB apart share one; the rule takes the multiples of 8 KiB,
// the strides that were measured (8 ways on Zen 4, 12 on Zen 5).
func aliasedStride(lda int) bool { return lda%2048 == 0 }

// restrideAliased reports whether a float32 m×k A read in place with an
// aliased row stride is first copied, row by row, to a stride that does
// not alias, before a product of n columns. On Zen 4's 8-way L1 even the
// 12-row tile loses to conflicts at a stride of 8 KiB: 2048³ (best of 5,
// two threads, interleaved) ran 91–118 ms read in place, 83–90 ms with A
// packed into panels (a transposing copy, 3.7 ms of it) and 82.6–85.5 ms
// copied to stride 2064 (either tile). At a multiple of 4 KiB it pays only
// once A outgrows the last-level cache (32 MiB): the tagging head's output
// projection (4585×3072 by 3072→768, 56 MB) ran 72% of the peak in place
// against 84–86% copied, while at 576–2304 rows (7–28 MB) the copy cost
// 1.5–6 points.
func restrideAliased(m, n, k, lda int, half bool) bool {
	if half || n < gemmPackAMinN {
		return false
	}
	return aliasedStride(lda) || lda%1024 == 0 && m*k >= restrideMinA
}

// unaliasedStride returns the row stride (values) of restrideAliased's copy
// of k-value rows: k rounded up to a line, and a line more where that is a
// multiple of 4 KiB (rows would still share one L1 set).
func unaliasedStride(k int) int {
	ld := (k + 15) / 16 * 16
	if ld%1024 == 0 {
		ld += 16
	}
	return ld
}

// restrideMinA is the size of A (values) from which a stride that is a
// multiple of 4 KiB is copied (see restrideAliased).
var restrideMinA = 8 << 20

// pickArch returns the tile family of the current level that wastes the
// fewest rows for m (nil at Generic).
func pickArch(m int) *gemmArch {
	as := gemmArchs[CurrentISA()]
	if len(as) == 0 {
		return nil
	}
	best := as[0]
	bw := (m+best.mr-1)/best.mr*best.mr - m
	for _, a := range as[1:] {
		if w := (m+a.mr-1)/a.mr*a.mr - m; w*best.mr < bw*a.mr {
			best, bw = a, w
		}
	}
	return best
}

// gemmRun computes C (+)= A·B (+ bias[i] on row i when bias != nil) for m×k
// A (see aSource) and k×n B (packed on the fly by packB) into row-major C
// (ldc), adding to C when accumulate is set. The bias is added in the
// micro-kernel's store. Work is split over the pool along N (or M when N is
// narrow).
func gemmRun(ar *gemmArch, m, n, k int, A aSource, packB bPacker, c []float32, ldc int, accumulate bool, bias []float32) {
	gemmRunB(ar, m, n, k, A, bSource{pack: packB}, c, ldc, accumulate, bias)
}

// gemmRunB is gemmRun with B given as a bSource.
func gemmRunB(ar *gemmArch, m, n, k int, A aSource, B bSource, c []float32, ldc int, accumulate bool, bias []float32) {
	if m <= 0 || n <= 0 {
		return
	}
	if B.direct != nil && (!gemmDirectB || ar.ki == nil || n%ar.nr != 0 || A.packed != nil) {
		B.direct = nil
	}
	mr, nr := ar.mr, ar.nr
	mp := (m + mr - 1) / mr
	np := (n + nr - 1) / nr
	workers := parallel.Threads()
	if flops := m * n * max(k, 1); flops < 1<<16 {
		workers = 1
	}
	splitN := np >= 2*workers || mp < workers
	if gemmSplitMRule && np < gemmSplitMMaxNP && mp >= 8*workers {
		// A narrow product with a tall A (the UNet's 1280-channel
		// convolutions at 16×16: 256 columns, 1280 rows) splits its rows
		// instead: each worker then streams half of A rather than all of
		// it, and packs all of B for itself, which costs little next to
		// its rows' work (1280→1280 at 16²: 72% → 75–77% of peak).
		splitN = false
	}
	var items int
	if splitN {
		items = np
	} else {
		items = mp
	}
	workers = min(workers, items)
	if A.packed == nil && A.h == nil && B.direct == nil && restrideAliased(m, n, k, A.lda, false) {
		// Rows copied with a stride that does not alias in L1.
		ld := unaliasedStride(k)
		rp := getScratch(m * ld)
		defer putScratch(rp)
		src, dst, lda := A.a, *rp, A.lda
		parallel.For(m, 16, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				copy(dst[i*ld:i*ld+k], src[i*lda:i*lda+k])
			}
		})
		A = aSource{a: dst, lda: ld}
	}
	if A.packed == nil && A.h == nil && gemmPackA && n >= gemmPackAMinN && B.direct == nil {
		pp := getScratch(mp * mr * k)
		defer putScratch(pp)
		packA(ar, m, k, A.a, A.lda, *pp)
		A = aSource{packed: *pp}
	}
	if !splitN && workers > 1 && B.direct == nil && deepOrder(n, k, ar.nr) {
		// Every worker needs all of B: pack it once, the k blocks shared out.
		wp := getScratch(k * ((n + ar.nr - 1) / ar.nr * ar.nr))
		defer putScratch(wp)
		parallel.For((k+gemmKC-1)/gemmKC, 1, func(lo, hi int) { packWhole(B.pack, *wp, ar.nr, k, 0, n, lo, hi) })
		B.whole = *wp
	}
	kcMax := min(gemmKC, max(k, 1))
	var sh *share
	if gemmShare && workers > 1 {
		sh = &share{slots: make([]atomic.Pointer[shareBlock], workers)}
		sh.left.Store(int32(workers))
	}
	parallel.Run(workers, func(w, nw int) {
		bufs, bp := newPanelBufs(kcMax, nr)
		defer putScratch(bp)
		sh := sh
		if nw != workers {
			sh = nil // run serially (nested in another region): no one to share with
		}
		lo, hi := w*items/nw, (w+1)*items/nw
		i0, i1, j0, j1 := 0, mp, 0, n
		if splitN {
			j0, j1 = lo*nr, min(hi*nr, n)
		} else {
			i0, i1 = lo, hi
		}
		if i0 < i1 && j0 < j1 {
			gemmBlock(ar, m, k, mp, i0, i1, j0, j1, A, B, c, ldc, accumulate, bias, sh, w, &bufs)
		}
		sh.help(w, &bufs)
	})
}

// gemmSplitMRule splits products of fewer than gemmSplitMMaxNP column
// panels and at least 8 row panels per worker by rows (see gemmRunB); off,
// by columns when there are two panels per worker (A/B measurements).
var (
	gemmSplitMRule  = true
	gemmSplitMMaxNP = 16
)

// gemmShare lets a worker done with its part of a product run row panels
// of the B blocks the others are still on (see share); off, each worker
// runs its fixed part alone (A/B measurements).
var gemmShare = true

// Work sharing. The product is split between the workers in fixed parts
// (contiguous column panels, or row panels when N is narrow), which keeps
// each worker's packed B block in its own L2 for all of its row panels.
// But the parts rarely finish together: on this project's shared VM one
// core often runs 5–20% slower than the other for a while (another guest
// on it, interrupts, a helper woken 0.1–0.4 ms late), and the caller of a
// fixed split waits for the slower one. So each worker publishes its
// current B block (packed, or read in place) with a counter of its row
// panels; the owner claims panels from it in order, and a worker done
// with its own part claims them too, running them with its own buffers
// against the owner's block. The owner reuses a block only when every
// claimed panel is done. Every C tile still sees the same k blocks in the
// same order, by whichever worker, so the bits do not change.

// A share is the work-sharing state of one product's workers.
type share struct {
	slots []atomic.Pointer[shareBlock] // each worker's current block, or nil
	left  atomic.Int32                 // workers whose own part is not done
}

// A shareBlock is one B block of a worker's part: n row panels, claimed in
// order and run by run with the claiming goroutine's buffers.
type shareBlock struct {
	next, done atomic.Int32
	n          int32
	run        func(i int, b *panelBufs)
}

// runBlock runs panels 0..n-1 of a block through run and returns when all
// are done, so that the caller may then reuse what run reads. With a nil
// share it runs them on the caller; otherwise it publishes the block in
// worker w's slot for the others to help with.
func (sh *share) runBlock(w, n int, own *panelBufs, run func(i int, b *panelBufs)) {
	if sh == nil {
		for i := 0; i < n; i++ {
			run(i, own)
		}
		return
	}
	sb := &shareBlock{n: int32(n), run: run}
	sh.slots[w].Store(sb)
	if shareTestHook != nil {
		shareTestHook(w, sb)
	}
	sb.work(own)
	for spins := 0; sb.done.Load() < sb.n; spins++ {
		if spins%64 == 63 {
			runtime.Gosched()
		}
	}
	sh.slots[w].Store(nil)
}

// work claims and runs panels of sb until none is left to claim, and
// returns how many it ran.
func (sb *shareBlock) work(b *panelBufs) (ran int) {
	for {
		i := sb.next.Add(1) - 1
		if i >= sb.n {
			return ran
		}
		sb.run(int(i), b)
		sb.done.Add(1)
		ran++
	}
}

// shareTestHook, when set (tests), is called by a worker that has just
// published a block, before it runs any of it; sharedPanels counts the
// panels run by workers other than their block's owner.
var (
	shareTestHook func(w int, sb *shareBlock)
	sharedPanels  atomic.Int64
)

// help is called by worker w once its own part is done: it runs panels of
// the other workers' blocks until every worker's part is done.
func (sh *share) help(w int, b *panelBufs) {
	if sh == nil {
		return
	}
	sh.left.Add(-1)
	for spins := 0; sh.left.Load() > 0; spins++ {
		for v := range sh.slots {
			if sb := sh.slots[v].Load(); v != w && sb != nil && sb.next.Load() < sb.n {
				sharedPanels.Add(int64(sb.work(b)))
			}
		}
		if spins%64 == 63 {
			runtime.Gosched()
		}
	}
}

// panelBufs is the scratch one goroutine needs to run row panels: a copy
// of an A panel (widened from float16, or a partial panel padded with
// zeros; packed layout on the packed path, row stride kc on the direct
// one), an edge tile of C, and the bias of a partial panel.
type panelBufs struct{ a, tmp, bias []float32 }

// maxMR bounds the tile heights (panelBufs are sized for it).
const maxMR = 16

func newPanelBufs(kcMax, nr int) (panelBufs, *[]float32) {
	p := getScratch(maxMR*kcMax + maxMR*nr + maxMR)
	b := *p
	return panelBufs{a: b[:maxMR*kcMax], tmp: b[maxMR*kcMax : maxMR*kcMax+maxMR*nr], bias: b[maxMR*kcMax+maxMR*nr:]}, p
}

// gemmBlock runs row panels [i0,i1) × columns [j0,j1) as worker w of sh
// (nil: alone), with the goroutine's buffers own.
func gemmBlock(ar *gemmArch, m, k, mp, i0, i1, j0, j1 int, A aSource, B bSource, c []float32, ldc int, accumulate bool, bias []float32, sh *share, w int, own *panelBufs) {
	if B.direct != nil && k > 0 {
		gemmBlockDirect(ar, m, k, i0, i1, j0, j1, A, B, c, ldc, accumulate, bias, sh, w, own)
		return
	}
	mr, nr := ar.mr, ar.nr
	if k == 0 {
		for i := i0 * mr; i < min(i1*mr, m); i++ {
			row := c[i*ldc+j0 : i*ldc+j1]
			if !accumulate {
				clear(row)
			}
			if bias != nil {
				addScalar(row, row, bias[i])
			}
		}
		return
	}
	ncb := max(nr, gemmNC/nr*nr) // columns per packed B block
	if deepOrder(j1-j0, k, nr) {
		// Few columns: each row panel runs all its k blocks in turn, against
		// B packed whole (by gemmRunB when every worker has all the
		// columns, else here), rather than every panel against one k block
		// at a time. A then streams row by row in long runs instead of 1 KB
		// pieces and the C tiles stay in L1 (1280→1280 at 8×8 and 16×16:
		// +5–14%, interleaved A/B). Same k blocks, same order: same bits.
		nc := j1 - j0
		ncp := (nc + nr - 1) / nr * nr
		bp := B.whole // set only when every worker has all the columns
		if bp == nil {
			bufp := getScratch(k * ncp)
			defer putScratch(bufp)
			bp = *bufp
			packWhole(B.pack, bp, nr, k, j0, nc, 0, (k+gemmKC-1)/gemmKC)
		}
		sh.runBlock(w, i1-i0, own, func(i int, b *panelBufs) {
			for pc := 0; pc < k; pc += gemmKC {
				kc := min(gemmKC, k-pc)
				packedPanel(ar, m, k, mp, i0+i, i1, pc, kc, j0, nc, true, A, bp[pc*ncp:], c, ldc, accumulate, bias, b)
			}
		})
		return
	}
	kcMax := min(gemmKC, k)
	ncMax := min(ncb, (j1-j0+nr-1)/nr*nr)
	bufp := getScratch(kcMax * ncMax)
	defer putScratch(bufp)
	bp := *bufp
	for jc := j0; jc < j1; jc += ncb {
		nc := min(ncb, j1-jc)
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			B.pack(bp, pc, kc, jc, nc)
			sh.runBlock(w, i1-i0, own, func(i int, b *panelBufs) {
				packedPanel(ar, m, k, mp, i0+i, i1, pc, kc, jc, nc, false, A, bp, c, ldc, accumulate, bias, b)
			})
		}
	}
}

// packWhole packs k blocks [b0, b1) of the nc columns of B from j0 into
// dst, block pc (a multiple of gemmKC) at dst[pc*ncp:] with ncp = nc
// rounded up to nr: B packed whole for the narrow products' order.
func packWhole(pack bPacker, dst []float32, nr, k, j0, nc, b0, b1 int) {
	ncp := (nc + nr - 1) / nr * nr
	for pc := b0 * gemmKC; pc < min(b1*gemmKC, k); pc += gemmKC {
		kc := min(gemmKC, k-pc)
		pack(dst[pc*ncp:pc*ncp+kc*ncp], pc, kc, j0, nc)
	}
}

// packedPanel runs row panel ip (of those before i1) against k block
// [pc, pc+kc) of the packed B panels bp (nc columns from jc), with the
// buffers b. deep says which A panel comes next (to prefetch): the same
// panel's next k block, or (block by block) the next panel's same one.
func packedPanel(ar *gemmArch, m, k, mp, ip, i1, pc, kc, jc, nc int, deep bool, A aSource, bp []float32, c []float32, ldc int, accumulate bool, bias []float32, b *panelBufs) {
	mr, nr := ar.mr, ar.nr
	acc := 0
	if accumulate || pc > 0 {
		acc = 1
	}
	nextR0, nextPC, hasNext := (ip+1)*mr, pc, ip+1 < i1 // the next A panel
	if deep {
		nextR0, nextPC, hasNext = ip*mr, pc+kc, pc+kc < k
	}
	rows := min(mr, m-ip*mr)
	apart := b.a[:kc*mr]
	var ap *float32
	kern := ar.kp
	lda := 0
	switch {
	case A.packed != nil:
		ap = &A.packed[pc*mp*mr+ip*kc*mr]
	case A.h != nil:
		// Widen the mr×kc panel into row-major apart (stride kc),
		// prefetching the next panel's rows.
		next := mr * A.lda
		if deep {
			next = kc
		}
		widenPanel(apart, A.h, (ip*mr)*A.lda+pc, rows, kc, A.lda, next, hasNext)
		clear(apart[rows*kc : mr*kc])
		ap, kern, lda = &apart[0], ar.ks, kc
	case rows == mr:
		ap, kern, lda = &A.a[ip*mr*A.lda+pc], ar.ks, A.lda
	default:
		clear(apart)
		for r := 0; r < rows; r++ {
			src := A.a[(ip*mr+r)*A.lda+pc : (ip*mr+r)*A.lda+pc+kc]
			for p, v := range src {
				apart[p*mr+r] = v
			}
		}
		ap = &apart[0]
	}
	var bv *float32 // bias of these rows, added once (first k block)
	if bias != nil && pc == 0 {
		if rows == mr {
			bv = &bias[ip*mr]
		} else {
			bpart := b.bias[:mr]
			clear(bpart)
			copy(bpart, bias[ip*mr:ip*mr+rows])
			bv = &bpart[0]
		}
	}
	for jp := 0; jp*nr < nc; jp++ {
		cols := min(nr, nc-jp*nr)
		cj := jc + jp*nr
		if (jp+1)*nr >= nc && hasNext && !deep { // deep: A rows are read in order (hardware prefetch)
			prefetchA(A, nextR0, min(mr, m-nextR0), nextPC, min(gemmKC, k-nextPC))
		}
		if rows == mr && cols == nr {
			kern(kc, ap, lda, &bp[jp*kc*nr], &c[ip*mr*ldc+cj], ldc, acc, bv)
			continue
		}
		kern(kc, ap, lda, &bp[jp*kc*nr], &b.tmp[0], nr, 0, bv)
		storeTile(c[ip*mr*ldc+cj:], ldc, b.tmp, nr, rows, cols, acc)
	}
}

// Blocking of the direct-B path: columns per block (the image data of a
// block's B panels stays in L2 while every A panel sweeps it), and whether
// the first A panel's sweep prefetches each next B panel (it brings the
// block's image data in; the later sweeps find it in L2).
var (
	gemmDirectNC = 512
	gemmDirectPF = true
)

// aPanel is one row panel of the direct path: rows [r0, r0+rows) of A and C
// through a kernel of mr >= rows rows.
type aPanel struct {
	r0, rows, mr int
	ki           func(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)
}

// directPanels splits rows [r0, r1) into row panels for the indirect
// kernels of ar's width: without padding when a mix of the level's heights
// (e.g. 14 and 12 for 32 columns) adds up to r1-r0 (fewest panels first),
// else ar.mr rows each, the last one partial.
func directPanels(ar *gemmArch, r0, r1 int) []aPanel {
	var fam []*gemmArch // the tiles of ar's level and width
	for _, as := range gemmArchs {
		if slices.Contains(as, ar) {
			for _, a := range as {
				if a.nr == ar.nr && a.ki != nil {
					fam = append(fam, a)
				}
			}
		}
	}
	n := r1 - r0
	var ps []aPanel
	if len(fam) == 2 {
		hi, lo := fam[0], fam[1]
		if hi.mr < lo.mr {
			hi, lo = lo, hi
		}
		for a := n / hi.mr; a >= 0; a-- {
			if (n-a*hi.mr)%lo.mr != 0 {
				continue
			}
			for r, i := r0, 0; r < r1; i++ {
				t := hi
				if i >= a {
					t = lo
				}
				ps = append(ps, aPanel{r, t.mr, t.mr, t.ki})
				r += t.mr
			}
			return ps
		}
	}
	for r := r0; r < r1; r += ar.mr {
		ps = append(ps, aPanel{r, min(ar.mr, r1-r), ar.mr, ar.ki})
	}
	return ps
}

// gemmBlockDirect is gemmBlock for a direct B (see bSource): the same k
// blocking and summation order, hence the same bits, with the B panels
// read in place by the indirect micro-kernels instead of packed, and the
// row panels cut without padding where the tile heights allow
// (directPanels).
func gemmBlockDirect(ar *gemmArch, m, k, i0, i1, j0, j1 int, A aSource, B bSource, c []float32, ldc int, accumulate bool, bias []float32, sh *share, w int, own *panelBufs) {
	nr := ar.nr
	ncb := max(nr, gemmDirectNC/nr*nr)
	r0, r1 := i0*ar.mr, min(i1*ar.mr, m)
	ps := directPanels(ar, r0, r1)
	if deepOrder(j1-j0, k, nr) {
		// Few columns: each A panel serves only j1-j0 columns, so the
		// product streams A (the weights) from memory. Each panel runs all
		// its k blocks in turn, as on the packed path (see gemmBlock): A is
		// read row by row in long runs and the C tiles stay in L1. The k
		// blocks of every C tile are the same, in the same order.
		npan := (j1 - j0) / nr
		sh.runBlock(w, len(ps), own, func(ip int, b *panelBufs) {
			for pc := 0; pc < k; pc += gemmKC {
				kc := min(gemmKC, k-pc)
				directPanel(ps, ip, pc, kc, k, j0, npan, nr, true, A, B, c, ldc, accumulate, bias, b)
			}
		})
		return
	}
	for jc := j0; jc < j1; jc += ncb {
		npan := min(ncb, j1-jc) / nr
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			sh.runBlock(w, len(ps), own, func(ip int, b *panelBufs) {
				directPanel(ps, ip, pc, kc, k, jc, npan, nr, false, A, B, c, ldc, accumulate, bias, b)
			})
		}
	}
}

// gemmDeep runs the narrow products (at most gemmDeepCols columns per
// worker) panel by panel through every k block (see gemmBlockDirect); off,
// block by block (A/B measurements).
var (
	gemmDeep     = true
	gemmDeepCols = 128
)

// deepOrder reports whether a worker's part of n columns (tiles nr wide)
// over k runs panel by panel (gemmDeep).
func deepOrder(n, k, nr int) bool {
	return gemmDeep && n <= max(nr, gemmDeepCols) && k > gemmKC
}

// directPanel runs A panel ip of ps against k block [pc, pc+kc) of the npan
// B panels from column jc, with the buffers b. deep says which A panel
// comes next (to prefetch): the same panel's next k block, or (block by
// block) the next panel's same one.
func directPanel(ps []aPanel, ip, pc, kc, k, jc, npan, nr int, deep bool, A aSource, B bSource, c []float32, ldc int, accumulate bool, bias []float32, b *panelBufs) {
	pn := ps[ip]
	acc := 0
	if accumulate || pc > 0 {
		acc = 1
	}
	// The A panel after this one, for the prefetches.
	nextOff, hasNext := pn.rows*A.lda, ip+1 < len(ps)
	if deep {
		nextOff, hasNext = gemmKC, pc+kc < k
	}
	// A row-major copy (row stride kc, zero rows below) of an A panel the
	// kernels cannot read in place: a float16 one (widened) or a partial one.
	acopy := b.a[:pn.mr*kc]
	ap, lda := (*float32)(nil), kc
	switch {
	case A.h != nil:
		// Widen the panel, prefetching the next one's rows.
		widenPanel(acopy, A.h, pn.r0*A.lda+pc, pn.rows, kc, A.lda, nextOff, hasNext)
		clear(acopy[pn.rows*kc : pn.mr*kc])
		ap = &acopy[0]
	case pn.rows < pn.mr:
		for r := 0; r < pn.rows; r++ {
			copy(acopy[r*kc:(r+1)*kc], A.a[(pn.r0+r)*A.lda+pc:])
		}
		clear(acopy[pn.rows*kc : pn.mr*kc])
		ap = &acopy[0]
	default:
		ap, lda = &A.a[pn.r0*A.lda+pc], A.lda
	}
	var bv *float32 // bias of these rows, added once (first k block)
	if bias != nil && pc == 0 {
		if pn.rows == pn.mr {
			bv = &bias[pn.r0]
		} else {
			bpart := b.bias[:pn.mr]
			clear(bpart)
			copy(bpart, bias[pn.r0:pn.r0+pn.rows])
			bv = &bpart[0]
		}
	}
	for jp := 0; jp < npan; jp++ {
		cj := jc + jp*nr
		var pf *float32
		if gemmDirectPF && ip == 0 && jp+1 < npan {
			pf = B.direct(cj + nr)
		}
		if jp+1 == npan && hasNext && !deep && ps[ip+1].rows == ps[ip+1].mr { // deep: A rows are read in order
			prefetchA(A, ps[ip+1].r0, ps[ip+1].rows, pc, kc)
		}
		bb, of := B.direct(cj), &B.offs[pc]
		if pn.rows == pn.mr {
			pn.ki(kc, ap, lda, bb, of, &c[pn.r0*ldc+cj], ldc, acc, bv, pf)
			continue
		}
		pn.ki(kc, ap, lda, bb, of, &b.tmp[0], nr, 0, bv, pf)
		storeTile(c[pn.r0*ldc+cj:], ldc, b.tmp, nr, pn.rows, nr, acc)
	}
}

// prefetchA prefetches rows [r0, r0+rows) × columns [pc, pc+kc) of an A read
// in place (a no-op for other A sources, or with gemmPrefetchA off): called
// during the last B panel of an A panel, for the next A panel.
func prefetchA(A aSource, r0, rows, pc, kc int) {
	if !gemmPrefetchA || A.a == nil {
		return
	}
	if v := fast(); v != nil {
		v.prefetch(&A.a[r0*A.lda+pc], A.lda, rows, (kc*4+63)/64+1)
	}
}

// storeTile writes (acc 0) or adds (acc 1) the rows×cols corner of a
// micro-kernel tile computed into tmp (row stride nr) to c (row stride ldc):
// the edge tiles, which the kernels cannot store in place.
func storeTile(c []float32, ldc int, tmp []float32, nr, rows, cols, acc int) {
	for r := 0; r < rows; r++ {
		crow := c[r*ldc : r*ldc+cols]
		t := tmp[r*nr : r*nr+cols]
		if acc == 1 {
			for i := range crow {
				crow[i] += t[i]
			}
		} else {
			copy(crow, t)
		}
	}
}

// matrixB returns a packer for B(p,j) = alpha*b[p*ldb+j] (or alpha*b[j*ldb+p]
// when trans) with n columns.
func matrixB(ar *gemmArch, b []float32, ldb, n int, trans bool, alpha float32) bPacker {
	return matB(ar, F32(b), ldb, n, trans, alpha)
}

// matB is matrixB for a Mat: float16 values are widened as they are packed
// (a transposed column through a kc-long buffer).
func matB(ar *gemmArch, bm Mat, ldb, n int, trans bool, alpha float32) bPacker {
	nr := ar.nr
	return func(dst []float32, pc, kc, j0, nc int) {
		var colBuf []float32 // a widened float16 column of Bᵀ
		if trans && bm.F16 != nil {
			var colArr [256]float32
			colBuf = colArr[:]
			if kc > len(colArr) {
				colBuf = make([]float32, kc)
			}
			colBuf = colBuf[:kc]
		}
		for jp := 0; jp*nr < nc; jp++ {
			d := dst[jp*kc*nr : (jp+1)*kc*nr]
			jj := j0 + jp*nr
			w := min(nr, n-jj)
			if !trans {
				for p := 0; p < kc; p++ {
					dr := d[p*nr : p*nr+nr]
					bm.Read(dr[:w], (pc+p)*ldb+jj)
					if alpha != 1 {
						for j, v := range dr[:w] {
							dr[j] = alpha * v
						}
					}
					clear(dr[w:])
				}
				continue
			}
			if w < nr {
				clear(d)
			}
			p0 := 0 // rows [0, p0) packed by the transposing kernel
			if v := fast(); v != nil && v.packT != nil && w == nr && nr%16 == 0 && alpha == 1 && kc >= 16 {
				p0 = kc / 16 * 16
				if bm.F16 != nil {
					v.packTH(&d[0], nr, &bm.F16[jj*ldb+pc], ldb, p0)
				} else {
					v.packT(&d[0], nr, &bm.F32[jj*ldb+pc], ldb, p0)
				}
				if p0 == kc {
					continue
				}
			}
			for j := 0; j < w; j++ {
				o := (jj+j)*ldb + pc + p0
				var src []float32
				if bm.F16 != nil {
					src = colBuf[:kc-p0]
					WidenF16(src, bm.F16[o:o+kc-p0])
				} else {
					src = bm.F32[o : o+kc-p0]
				}
				if alpha == 1 {
					for p, v := range src {
						d[(p0+p)*nr+j] = v
					}
				} else {
					for p, v := range src {
						d[(p0+p)*nr+j] = alpha * v
					}
				}
			}
		}
	}
}

// packA packs A(i,p) = a[i*lda+p] (m×k) into the aSource panel layout.
func packA(ar *gemmArch, m, k int, a []float32, lda int, dst []float32) {
	mr := ar.mr
	mp := (m + mr - 1) / mr
	parallel.For(mp, 4, func(lo, hi int) {
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			for ip := lo; ip < hi; ip++ {
				d := dst[pc*mp*mr+ip*kc*mr : pc*mp*mr+(ip+1)*kc*mr]
				rows := min(mr, m-ip*mr)
				for r := 0; r < rows; r++ {
					src := a[(ip*mr+r)*lda+pc : (ip*mr+r)*lda+pc+kc]
					for p, v := range src {
						d[p*mr+r] = v
					}
				}
				for r := rows; r < mr; r++ {
					for p := 0; p < kc; p++ {
						d[p*mr+r] = 0
					}
				}
			}
		}
	})
}

// packATrans packs A(i,p) = a[p*lda+i] (m×k) into the aSource panel layout.
func packATrans(ar *gemmArch, m, k int, a Mat, lda int, dst []float32) {
	mr := ar.mr
	mp := (m + mr - 1) / mr
	parallel.For(mp, 4, func(lo, hi int) {
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			for ip := lo; ip < hi; ip++ {
				d := dst[pc*mp*mr+ip*kc*mr : pc*mp*mr+(ip+1)*kc*mr]
				rows := min(mr, m-ip*mr)
				for p := 0; p < kc; p++ {
					a.Read(d[p*mr:p*mr+rows], (pc+p)*lda+ip*mr)
					clear(d[p*mr+rows : p*mr+mr])
				}
			}
		}
	})
}

// sgemmFast is SgemmMat on the micro-kernels of the current level.
func sgemmFast(ar *gemmArch, transA, transB bool, m, n, k int, alpha float32, a Mat, lda int, b Mat, ldb int, beta float32, c []float32, ldc int) {
	if k == 0 || alpha == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			if beta == 0 {
				clear(row)
			} else if beta != 1 {
				Scale(row, row, beta)
			}
		}
		return
	}
	accumulate := beta != 0
	if beta != 0 && beta != 1 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			Scale(row, row, beta)
		}
	}
	A := matA(a, lda)
	if transA {
		mp := (m + ar.mr - 1) / ar.mr
		pp := getScratch(mp * ar.mr * k)
		defer putScratch(pp)
		packATrans(ar, m, k, a, lda, *pp)
		A = aSource{packed: *pp}
	}
	gemmRun(ar, m, n, k, A, matB(ar, b, ldb, n, transB, alpha), c, ldc, accumulate, nil)
}

// widenPanel widens rows rows of kc float16 values, row r at
// h[off+r*lda:], into dst[r*kc:]; with prefetch it also prefetches the same
// rows next (values) further on.
func widenPanel(dst []float32, h []uint16, off, rows, kc, lda, next int, prefetch bool) {
	v := fast()
	if v == nil || v.widenF16PF == nil || kc < v.w {
		for r := 0; r < rows; r++ {
			WidenF16(dst[r*kc:(r+1)*kc], h[off+r*lda:off+r*lda+kc])
		}
		return
	}
	body := kc / v.w * v.w
	pf := next * 2
	for r := 0; r < rows; r++ {
		s := h[off+r*lda : off+r*lda+kc]
		d := dst[r*kc : (r+1)*kc]
		if prefetch && off+r*lda+next+kc <= len(h) {
			v.widenF16PF(&d[0], &s[0], body, pf)
		} else {
			v.widenF16(&d[0], &s[0], body)
		}
		for i := body; i < kc; i++ {
			d[i] = tensor.F16ToF32(s[i])
		}
	}
}
