package kernels

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/osediff-go/osediff/parallel"
)

// bestSliceGFLOPs runs f (flops each) in many short slices on one locked
// thread and returns the fastest slice's rate: on a busy machine the fastest
// slice is the one that ran uninterrupted.
func bestSliceGFLOPs(flops float64, tries int, f func()) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f()
	best := 0.0
	for i := 0; i < tries; i++ {
		t0, c0 := time.Now(), threadCPU()
		f()
		d := time.Since(t0).Seconds()
		if c := threadCPU() - c0; c > 0 && c < d {
			d = c // preempted time does not count
		}
		best = max(best, flops/d/1e9)
	}
	return best
}

// BenchmarkMicroKernel reports each micro-kernel's rate with A, B and C in
// L1/L2 (k = 256), per core, next to the FMA-loop rate of one core.
func BenchmarkMicroKernel(b *testing.B) {
	for _, l := range []ISA{AVX512, AVX2} {
		if l > DetectedISA() {
			continue
		}
		old := SetISA(l)
		peak := perCoreFMARate()
		for _, ar := range gemmArchs[l] {
			const k, reps = 256, 200
			a := make([]float32, k*ar.mr)
			bb := make([]float32, k*ar.nr)
			c := make([]float32, ar.mr*ar.nr)
			for i := range a {
				a[i] = 1e-3
			}
			flops := float64(2*ar.mr*ar.nr*k) * reps
			var gp, gs float64
			for i := 0; i < b.N; i++ {
				gp = bestSliceGFLOPs(flops, 50, func() {
					for r := 0; r < reps; r++ {
						ar.kp(k, &a[0], 0, &bb[0], &c[0], ar.nr, 1, nil)
					}
				})
				gs = bestSliceGFLOPs(flops, 50, func() {
					for r := 0; r < reps; r++ {
						ar.ks(k, &a[0], k, &bb[0], &c[0], ar.nr, 1, nil)
					}
				})
			}
			b.Logf("%s: packed A %.1f GFLOP/s, strided A %.1f GFLOP/s, FMA loop %.1f GFLOP/s per core", ar.name, gp, gs, peak)
		}
		SetISA(old)
	}
}

// rampFill returns n values cycling through 0, 0.1, ..., 0.6 (benchmark
// operands).
func rampFill(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(i%7) * 0.1
	}
	return s
}

// BenchmarkOneCore reports the best-slice rate of whole kernels on one
// worker at sizes that take ~10 ms, a contention-robust probe of the
// blocking (see bestSliceGFLOPs).
func BenchmarkOneCore(b *testing.B) {
	old := parallel.Threads()
	parallel.SetThreads(1)
	defer parallel.SetThreads(old)
	fill := rampFill
	type shape struct {
		name  string
		flops float64
		run   func()
	}
	var shapes []shape
	{
		const n = 1024
		a, bb, c := fill(n*n), fill(n*n), make([]float32, n*n)
		shapes = append(shapes, shape{"sgemm_1024", 2 * n * n * n, func() { Sgemm(false, false, n, n, n, 1, a, n, bb, n, 0, c, n) }})
	}
	for _, cs := range [][3]int{{128, 64, 1}, {256, 32, 1}, {512, 16, 1}, {128, 64, 2}, {256, 64, 2}} {
		ch, side, st := cs[0], cs[1], cs[2]
		p := Conv2DParams{InC: ch, OutC: ch, KH: 3, KW: 3, StrideH: st, StrideW: st, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		if st == 2 {
			p.PadT, p.PadL = 0, 0
		}
		oh, ow := p.OutSize(side, side)
		x, w, bias, y := fill(ch*side*side), fill(ch*ch*9), fill(ch), make([]float32, ch*oh*ow)
		shapes = append(shapes, shape{fmt.Sprintf("conv3x3_%d_%d_s%d", ch, side, st), 2 * float64(ch*ch*9) * float64(oh*ow),
			func() { Conv2D(p, 1, side, side, x, w, bias, y) }})
	}
	{
		const l, d, h = 1024, 64, 1
		q, k, v, o := fill(l*h*d), fill(l*h*d), fill(l*h*d), make([]float32, l*h*d)
		p := AttentionParams{Batch: 1, Heads: h, Lq: l, Lk: l, Dim: d, LdQ: h * d, LdK: h * d, LdV: h * d, LdO: h * d, Scale: 0.125}
		shapes = append(shapes, shape{"attention_1024x64x1", 4 * l * l * d * h, func() { Attention(p, q, k, v, o) }})
	}
	for i := 0; i < b.N; i++ {
		pk := perCoreFMARate()
		for _, s := range shapes {
			g := bestSliceGFLOPs(s.flops, 10, s.run)
			b.Logf("%-22s %6.1f GFLOP/s per core = %5.1f%% of %.0f", s.name, g, 100*g/pk, pk)
		}
	}
}

// BenchmarkMicroKernelL2 runs the micro-kernels the way gemmBlock does: one
// A panel (L1) against every panel of a kc×nc packed B block (L2).
func BenchmarkMicroKernelL2(b *testing.B) {
	for _, ar := range gemmArchs[DetectedISA()] {
		kc, nc := gemmKC, gemmNC/ar.nr*ar.nr
		a := make([]float32, kc*ar.mr)
		bb := make([]float32, kc*nc)
		c := make([]float32, ar.mr*nc)
		flops := float64(2 * ar.mr * nc * kc * 20)
		for i := 0; i < b.N; i++ {
			g := bestSliceGFLOPs(flops, 30, func() {
				for r := 0; r < 20; r++ {
					for jp := 0; jp < nc/ar.nr; jp++ {
						ar.kp(kc, &a[0], 0, &bb[jp*kc*ar.nr], &c[jp*ar.nr], nc, 1, nil)
					}
				}
			})
			b.Logf("%s: A in L1, B %d KiB: %.1f GFLOP/s per core", ar.name, kc*nc*4/1024, g)
			for _, lda := range []int{1024, 1152, 2048, 4608} {
				as := make([]float32, lda*ar.mr)
				g := bestSliceGFLOPs(flops, 30, func() {
					for r := 0; r < 20; r++ {
						for jp := 0; jp < nc/ar.nr; jp++ {
							ar.ks(kc, &as[0], lda, &bb[jp*kc*ar.nr], &c[jp*ar.nr], nc, 1, nil)
						}
					}
				})
				b.Logf("%s: strided A lda %d, B %d KiB: %.1f GFLOP/s per core", ar.name, lda, kc*nc*4/1024, g)
			}
		}
	}
}
