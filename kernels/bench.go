package kernels

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/osediff-go/osediff/parallel"
)

// BenchResult is one line of `osediff bench kernels`.
type BenchResult struct {
	Name          string  `json:"name"`
	Seconds       float64 `json:"seconds"`         // best of the repetitions
	GFLOPs        float64 `json:"gflops"`          // 0 for memory-bound shapes
	PercentOfPeak float64 `json:"percent_of_peak"` // of PeakGFLOPs
	// Memory-bound shapes (groupnorm) compare against copying the tensor.
	CopySeconds float64 `json:"copy_seconds,omitempty"`
	VsCopy      float64 `json:"vs_copy,omitempty"`
}

// BenchmarkNames lists the shapes RunBenchmarks measures, in order.
var BenchmarkNames = []string{"sgemm_2048", "conv3x3_128_256", "conv3x3_256_128", "conv3x3_512_64",
	"attention_4096x64x5", "groupnorm_silu_128_512"}

var (
	peakOnce sync.Once
	peak     float64
)

// PeakGFLOPs estimates the fp32 peak of the machine at the current thread
// count: every worker runs a register-only loop of independent FMAs (12 per
// iteration, zmm on AVX-512, ymm on AVX2) for about 40 ms; the best of three
// runs, summed over workers, is the peak. On the 2-core Zen 4 machine this
// gives ≈ 2 × 117 GFLOP/s. With no fast path it returns 0.
func PeakGFLOPs() float64 {
	peakOnce.Do(func() {
		v := fast()
		if v == nil || v.fmaLoop == nil {
			return
		}
		flopsPerIter := float64(12 * v.w * 2)
		const iters = 4_000_000
		v.fmaLoop(iters / 10) // warm the clock up
		for rep := 0; rep < 3; rep++ {
			t := parallel.Threads()
			rates := make([]float64, t)
			parallel.Run(t, func(w, _ int) {
				t0 := time.Now()
				v.fmaLoop(iters)
				rates[w] = flopsPerIter * iters / time.Since(t0).Seconds() / 1e9
			})
			var sum float64
			for _, r := range rates {
				sum += r
			}
			peak = max(peak, sum)
		}
	})
	return peak
}

// RunBenchmarks runs every shape of BenchmarkNames, best of reps (>= 1).
func RunBenchmarks(reps int) []BenchResult {
	var out []BenchResult
	for _, n := range BenchmarkNames {
		r, _ := RunBenchmark(n, reps)
		out = append(out, r)
	}
	return out
}

// RunBenchmark runs one named shape, best of reps.
func RunBenchmark(name string, reps int) (BenchResult, error) {
	reps = max(reps, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = rng.Float32()*2 - 1
		}
		return s
	}
	var flops float64
	var run func()
	var copyRun func()
	switch name {
	case "sgemm_2048":
		const n = 2048
		a, b, c := fill(n*n), fill(n*n), make([]float32, n*n)
		flops = 2 * n * n * n
		run = func() { Sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n) }
	case "conv3x3_128_256", "conv3x3_256_128", "conv3x3_512_64":
		var ch, side int
		fmt.Sscanf(name, "conv3x3_%d_%d", &ch, &side)
		p := Conv2DParams{InC: ch, OutC: ch, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		x, w, bias, y := fill(ch*side*side), fill(ch*ch*9), fill(ch), make([]float32, ch*side*side)
		flops = 2 * float64(ch*ch*9) * float64(side*side)
		run = func() { Conv2D(p, 1, side, side, x, w, bias, y) }
	case "attention_4096x64x5":
		const l, d, h = 4096, 64, 5
		q, k, v, o := fill(l*h*d), fill(l*h*d), fill(l*h*d), make([]float32, l*h*d)
		p := AttentionParams{Batch: 1, Heads: h, Lq: l, Lk: l, Dim: d, LdQ: h * d, LdK: h * d, LdV: h * d, LdO: h * d, Scale: 0.125}
		flops = 4 * l * l * d * h
		run = func() { Attention(p, q, k, v, o) }
	case "groupnorm_silu_128_512":
		const c, hw = 128, 512 * 512
		x, y := fill(c*hw), make([]float32, c*hw)
		g, b := fill(c), fill(c)
		run = func() { GroupNorm(x, y, 1, c, hw, 32, 1e-6, g, b, true) }
		copyRun = func() {
			parallel.For(len(x), 1<<20, func(lo, hi int) { copy(y[lo:hi], x[lo:hi]) })
		}
	default:
		return BenchResult{Name: name}, fmt.Errorf("kernels: unknown benchmark %q", name)
	}
	best := func(f func()) float64 {
		f() // warm up (page faults, scratch buffers)
		b := 0.0
		for i := 0; i < reps; i++ {
			t0 := time.Now()
			f()
			if s := time.Since(t0).Seconds(); b == 0 || s < b {
				b = s
			}
		}
		return b
	}
	r := BenchResult{Name: name, Seconds: best(run)}
	if flops > 0 {
		r.GFLOPs = flops / r.Seconds / 1e9
		if pk := PeakGFLOPs(); pk > 0 {
			r.PercentOfPeak = 100 * r.GFLOPs / pk
		}
	}
	if copyRun != nil {
		r.CopySeconds = best(copyRun)
		r.VsCopy = r.Seconds / r.CopySeconds
	}
	return r, nil
}
