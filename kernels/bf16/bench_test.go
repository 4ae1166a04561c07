package bf16

import (
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/kernels"
)

// BenchmarkTileL1 runs each micro-kernel on operands that stay in L1: the
// kernel's own ceiling (one core; the bf16 peak is ~232 GFLOP/s per core).
func BenchmarkTileL1(b *testing.B) {
	if !Available() {
		b.Skip("no AVX512_BF16")
	}
	for _, tl := range tiles {
		b.Run(tl.name, func(b *testing.B) {
			kp := 128
			a := make([]uint32, kp*tl.mr)
			bb := make([]uint32, kp*tl.nr)
			c := make([]float32, tl.mr*tl.nr)
			for i := 0; i < b.N; i++ {
				tl.kp(kp, &a[0], 0, &bb[0], &c[0], tl.nr, 1, nil, nil)
			}
			b.ReportMetric(float64(b.N)*float64(4*kp*tl.mr*tl.nr)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkGemm2048(b *testing.B) {
	const n = 2048
	r := rand.New(rand.NewPCG(1, 1))
	a, bm := randSlice(r, n*n), randSlice(r, n*n)
	c := make([]float32, n*n)
	flops := 2.0 * n * n * n
	b.Run("bf16", func(b *testing.B) {
		L := PackLeft(n, n, a, n)
		for i := 0; i < b.N; i++ {
			L.Gemm(n, bm, n, nil, c, n)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("linear-bf16", func(b *testing.B) {
		R := PackRightT(n, n, a, n)
		for i := 0; i < b.N; i++ {
			R.Gemm(n, bm, n, nil, c, n)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("fp32", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			kernels.Sgemm(false, false, n, n, n, 1, a, n, bm, n, 0, c, n)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

func BenchmarkConv3x3(b *testing.B) {
	p := kernels.Conv2DParams{InC: 128, OutC: 128, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
	const hw = 256
	r := rand.New(rand.NewPCG(2, 2))
	x := randSlice(r, p.InC*hw*hw)
	w := randSlice(r, p.OutC*p.InC*9)
	bias := randSlice(r, p.OutC)
	y := make([]float32, p.OutC*hw*hw)
	flops := 2.0 * float64(p.OutC*p.InC*9*hw*hw)
	b.Run("bf16", func(b *testing.B) {
		L := PackConv(p, w)
		for i := 0; i < b.N; i++ {
			L.Conv2D(p, 1, hw, hw, x, bias, y)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("fp32", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			kernels.Conv2D(p, 1, hw, hw, x, w, bias, y)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkConvSmall is a UNet-bottom convolution (1280 channels at 8×8):
// every packed panel straddles output rows.
func BenchmarkConvSmall(b *testing.B) {
	p := kernels.Conv2DParams{InC: 1280, OutC: 1280, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
	const hw = 8
	r := rand.New(rand.NewPCG(3, 3))
	x := randSlice(r, p.InC*hw*hw)
	w := randSlice(r, p.OutC*p.InC*9)
	y := make([]float32, p.OutC*hw*hw)
	flops := 2.0 * float64(p.OutC*p.InC*9*hw*hw)
	b.Run("bf16", func(b *testing.B) {
		L := PackConv(p, w)
		for i := 0; i < b.N; i++ {
			L.Conv2D(p, 1, hw, hw, x, nil, y)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("fp32", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			kernels.Conv2D(p, 1, hw, hw, x, w, nil, y)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkLinearUNet is a UNet attention projection: 4096 tokens, 320→320.
func BenchmarkLinearUNet(b *testing.B) {
	const m, n, k = 4096, 320, 320
	r := rand.New(rand.NewPCG(4, 4))
	x, w, bias := randSlice(r, m*k), randSlice(r, n*k), randSlice(r, n)
	y := make([]float32, m*n)
	flops := 2.0 * m * n * k
	b.Run("bf16", func(b *testing.B) {
		R := PackRightT(n, k, w, k)
		for i := 0; i < b.N; i++ {
			R.Gemm(m, x, k, bias, y, n)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("fp32", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			kernels.Sgemm(false, true, m, n, k, 1, x, k, w, k, 0, y, n)
			kernels.AddRowVector(y, m, n, bias)
		}
		b.ReportMetric(float64(b.N)*flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}
