package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
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
	// OtherCPU is the share (0..1) of all CPUs that other processes used
	// during the best repetition; IdleBefore is the idle share of the window
	// the repetition waited for (see WaitIdle). Readings with OtherCPU above a
	// few percent understate the kernel.
	OtherCPU   float64 `json:"other_cpu_share"`
	IdleBefore float64 `json:"idle_before"`
	// GFLOPsPerCPUSecond is FLOPs over the least CPU time (all threads) this
	// process spent on one repetition: the per-core rate while running,
	// which contention from other processes barely affects (an estimate of
	// GFLOPs/Threads() on an idle machine, if the work is balanced).
	GFLOPsPerCPUSecond float64 `json:"gflops_per_cpu_second,omitempty"`
}

// BenchmarkNames lists the shapes RunBenchmarks measures, in order.
var BenchmarkNames = []string{"sgemm_2048", "conv3x3_128_256", "conv3x3_256_128", "conv3x3_512_64",
	"attention_4096x64x5", "groupnorm_silu_128_512"}

var (
	peakOnce sync.Once
	peakMu   sync.Mutex // guards peak (RefinePeak raises it)
	peak     float64
)

// PeakGFLOPs estimates the fp32 peak of the machine at the current thread
// count. One goroutine, locked to its thread, runs a register-only loop of 12
// independent FMAs per iteration (zmm on AVX-512, ymm on AVX2; on Zen 4 both
// give 32 FLOP/cycle) in 40 slices of ~3 ms, after waiting (at most 2 s) for
// a quiet moment; the fastest slice is the per-core rate, which is
// multiplied by Threads(). Taking the best short slice of one core, rather
// than timing every worker at once, keeps the estimate from being depressed
// by other processes on a shared machine (a slice that ran uninterrupted
// shows the true rate); it assumes the cores are alike and the all-core
// clock equals the one-core clock, true on the 2-core Zen 4 machine
// (≈ 117 GFLOP/s per core, 234 in all). With no fast path it returns 0.
func PeakGFLOPs() float64 {
	peakOnce.Do(func() {
		p := perCoreFMARate() * float64(parallel.Threads())
		peakMu.Lock()
		peak = p
		peakMu.Unlock()
	})
	peakMu.Lock()
	defer peakMu.Unlock()
	return peak
}

// RefinePeak measures the peak again (see PeakGFLOPs), keeps the higher of
// the two estimates and returns it. A neighbour busy on the same physical
// core for the whole estimate depresses it (a 371 GFLOP/s estimate was
// seen here where the machine gives 457), which would inflate every
// percentage of it; the end of a long benchmark is a second chance.
func RefinePeak() float64 {
	PeakGFLOPs()
	q := perCoreFMARate() * float64(parallel.Threads())
	peakMu.Lock()
	defer peakMu.Unlock()
	peak = max(peak, q)
	return peak
}

// perCoreFMARate returns the best single-core FMA rate seen, in GFLOP/s.
func perCoreFMARate() float64 {
	v := fast()
	if v == nil || v.fmaLoop == nil {
		return 0
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	flopsPerIter := float64(12 * v.w * 2)
	const iters = 1_000_000 // ≈ 3 ms at 32 FLOP/cycle and 3.6 GHz
	v.fmaLoop(iters * 10)   // warm the clock up
	WaitIdle(0.5, 500*time.Millisecond, 2*time.Second)
	best := 0.0
	for rep := 0; rep < 40; rep++ {
		t0 := time.Now()
		v.fmaLoop(iters)
		best = max(best, flopsPerIter*iters/time.Since(t0).Seconds()/1e9)
	}
	return best
}

// RunBenchmarks runs every shape of BenchmarkNames, best of reps (>= 1).
// The percentages are of the higher of the peak estimates made before and
// after the runs (see RefinePeak).
func RunBenchmarks(reps int) []BenchResult {
	PeakGFLOPs()
	var out []BenchResult
	for _, n := range BenchmarkNames {
		r, _ := RunBenchmark(n, reps)
		out = append(out, r)
	}
	if pk := RefinePeak(); pk > 0 {
		for i := range out {
			out[i].PercentOfPeak = 100 * out[i].GFLOPs / pk
		}
	}
	return out
}

// RunBenchmark runs one named shape, best of reps. Every repetition waits
// for an idle window first (QuietMinIdle over QuietWindow, at most
// QuietMaxWait) and is redone (up to reps extra times) when other processes
// took more than QuietMaxOtherShare of the machine while it ran.
func RunBenchmark(name string, reps int) (BenchResult, error) {
	reps = max(reps, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	// Buffers are allocated as the engine allocates its tensors (tensor.Alloc:
	// huge pages advised for large ones).
	fill := func(n int) []float32 {
		s := tensor.Alloc(n)
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
		a, b, c := fill(n*n), fill(n*n), tensor.Alloc(n*n)
		flops = 2 * n * n * n
		run = func() { Sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n) }
	case "conv3x3_128_256", "conv3x3_256_128", "conv3x3_512_64":
		var ch, side int
		fmt.Sscanf(name, "conv3x3_%d_%d", &ch, &side)
		p := Conv2DParams{InC: ch, OutC: ch, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		x, w, bias, y := fill(ch*side*side), fill(ch*ch*9), fill(ch), tensor.Alloc(ch*side*side)
		flops = 2 * float64(ch*ch*9) * float64(side*side)
		run = func() { Conv2D(p, 1, side, side, x, w, bias, y) }
	case "attention_4096x64x5":
		const l, d, h = 4096, 64, 5
		q, k, v, o := fill(l*h*d), fill(l*h*d), fill(l*h*d), tensor.Alloc(l*h*d)
		p := AttentionParams{Batch: 1, Heads: h, Lq: l, Lk: l, Dim: d, LdQ: h * d, LdK: h * d, LdV: h * d, LdO: h * d, Scale: 0.125}
		flops = 4 * l * l * d * h
		run = func() { Attention(p, q, k, v, o) }
	case "groupnorm_silu_128_512":
		const c, hw = 128, 512 * 512
		x, y := fill(c*hw), tensor.Alloc(c*hw)
		g, b := fill(c), fill(c)
		run = func() { GroupNorm(x, y, 1, c, hw, 32, 1e-6, g, b, true) }
		copyRun = func() {
			parallel.For(len(x), 1<<20, func(lo, hi int) { copy(y[lo:hi], x[lo:hi]) })
		}
	default:
		return BenchResult{Name: name}, fmt.Errorf("kernels: unknown benchmark %q", name)
	}
	q := bestQuiet(reps, run)
	r := BenchResult{Name: name, Seconds: q.best, OtherCPU: q.others, IdleBefore: q.idleBefore}
	if flops > 0 {
		r.GFLOPs = flops / r.Seconds / 1e9
		if q.bestCPU > 0 {
			r.GFLOPsPerCPUSecond = flops / q.bestCPU / 1e9
		}
		if pk := PeakGFLOPs(); pk > 0 {
			r.PercentOfPeak = 100 * r.GFLOPs / pk
		}
	}
	if copyRun != nil {
		r.CopySeconds = bestQuiet(reps, copyRun).best
		r.VsCopy = r.Seconds / r.CopySeconds
	}
	return r, nil
}
