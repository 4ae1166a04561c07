package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// TestWorkSharing holds worker 0 back on each of its B blocks until another
// worker, done with its own part, has taken a row panel of it (see share),
// and checks that the results are bit for bit those of products
// without sharing: GEMMs (packed B, float16 A, edge tiles, bias,
// accumulation, split along M or N, narrow ones panel by panel through k)
// and convolutions (B read in place; packed at 8×8 and 16×16), with 2 and
// 3 workers.
func TestWorkSharing(t *testing.T) {
	if DetectedISA() == Generic {
		t.Skip("no fast path on this machine: nothing to share")
	}
	defer parallel.SetThreads(parallel.Threads())
	defer func() { shareTestHook = nil }()
	r := rand.New(rand.NewPCG(7, 8))
	type run func(out []float32)
	type tc struct {
		name string
		n    int // output length
		f    run
	}
	var cases []tc
	for _, s := range [][3]int{{300, 520, 300}, {700, 64, 257}, {33, 1100, 65}, {257, 257, 513}, {300, 64, 700}, {240, 256, 600}} {
		m, n, k := s[0], s[1], s[2]
		a, b, bias := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m)
		h := make([]uint16, len(a))
		for i, v := range a {
			h[i] = tensor.F32ToF16(v)
		}
		cases = append(cases,
			tc{fmt.Sprintf("sgemm_%dx%dx%d", m, n, k), m * n, func(c []float32) { Sgemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n) }},
			tc{fmt.Sprintf("sgemm_acc_%dx%dx%d", m, n, k), m * n, func(c []float32) {
				for i := range c {
					c[i] = float32(i%5) - 2
				}
				Sgemm(false, true, m, n, k, 0.5, a, k, b, k, 1, c, n)
			}},
			tc{fmt.Sprintf("gemm_f16_bias_%dx%dx%d", m, n, k), m * n, func(c []float32) {
				gemmRun(pickArchMN(m, n), m, n, k, aSource{h: h, lda: k}, matrixB(pickArchMN(m, n), b, n, n, false, 1), c, n, false, bias)
			}})
	}
	for _, s := range [][3]int{{64, 64, 32}, {96, 40, 64}, {130, 20, 32}, {40, 300, 8}, {64, 240, 16}} {
		ch, oc, side := s[0], s[1], s[2]
		p := Conv2DParams{InC: ch, OutC: oc, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		x, w, bias := randSlice(r, ch*side*side), randSlice(r, oc*ch*9), randSlice(r, oc)
		cases = append(cases, tc{fmt.Sprintf("conv_%d_%d_%d", ch, oc, side), oc * side * side, func(y []float32) {
			Conv2DEx(p, 1, side, side, x, F32(w), bias, y, ConvOptions{})
		}})
	}
	for _, threads := range []int{2, 3} {
		parallel.SetThreads(threads)
		for _, c := range cases {
			gemmShare, shareTestHook = false, nil
			want := make([]float32, c.n)
			c.f(want)
			gemmShare = true
			// Worker 0 lets every one of its blocks wait (up to a second)
			// until another worker has taken a panel of it.
			shareTestHook = func(w int, sb *shareBlock) {
				for end := time.Now().Add(time.Second); w == 0 && sb.next.Load() == 0 && time.Now().Before(end); {
					runtime.Gosched()
				}
			}
			before := sharedPanels.Load()
			got := make([]float32, c.n)
			c.f(got)
			shareTestHook = nil
			if sharedPanels.Load() == before {
				t.Errorf("%s, %d workers: no panel was run by another worker", c.name, threads)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s, %d workers: element %d = %v with sharing, %v without", c.name, threads, i, got[i], want[i])
				}
			}
		}
	}
	gemmShare = true
}
