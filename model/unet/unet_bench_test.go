package unet

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

// sd21Random builds the SD 2.1-base UNet with random weights and random
// inputs: a [1, 4, h, w] latent and [1, 77, 1024] text states.
func sd21Random(h, w int) (*UNet2DConditionModel, *tensor.Tensor, *tensor.Tensor) {
	cfg := SD21BaseConfig()
	m := New(cfg)
	checkpoint.RandomInit(m, 1)
	r := rand.New(rand.NewPCG(2, 3))
	randn := func(shape ...int) *tensor.Tensor {
		x := tensor.New(shape...)
		for i := range x.Data() {
			x.Data()[i] = float32(r.NormFloat64())
		}
		return x
	}
	return m, randn(1, cfg.InChannels, h, w), randn(1, 77, cfg.CrossAttentionDim)
}

// TestSD21Random runs one full-size forward at a 64×64 latent (a 512×512
// image) with random weights.
func TestSD21Random(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size SD 2.1-base UNet forward: skipped with -short")
	}
	m, x, ctx := sd21Random(64, 64)
	start := time.Now()
	y := m.Forward(x, 999, ctx)
	el := time.Since(start)
	if got := y.Shape(); len(got) != 4 || got[0] != 1 || got[1] != 4 || got[2] != 64 || got[3] != 64 {
		t.Fatalf("output shape %v, want [1 4 64 64]", got)
	}
	var sum, sq float64
	for _, v := range y.Data() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("non-finite output %v", v)
		}
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(y.Numel())
	std := math.Sqrt(sq/n - (sum/n)*(sum/n))
	if !(std > 1e-3) {
		t.Fatalf("output std %g: degenerate", std)
	}
	gf := FLOPs(m.Config, 64, 64, 77) / 1e9
	t.Logf("SD 2.1-base UNet 64×64: %.2f s, %.1f GFLOP, %.1f GFLOP/s; output mean %.3g std %.3g", el.Seconds(), gf, gf/el.Seconds(), sum/n, std)
}

// BenchmarkUNetSD21_64 times one SD 2.1-base UNet call at a 64×64 latent
// with 77 text tokens (random weights).
func BenchmarkUNetSD21_64(b *testing.B) {
	m, x, ctx := sd21Random(64, 64)
	flops := FLOPs(m.Config, 64, 64, 77)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m.Forward(x, 999, ctx)
	}
	s := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(s, "s/op")
	b.ReportMetric(flops/s/1e9, "GFLOP/s")
}
