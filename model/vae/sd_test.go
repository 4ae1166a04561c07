package vae

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

func randomSD(tb testing.TB) *AutoencoderKL {
	tb.Helper()
	m := New(SD21BaseConfig())
	checkpoint.RandomInit(m, 7)
	return m
}

func randomImage(h, w int) *tensor.Tensor {
	r := rand.New(rand.NewPCG(3, 4))
	x := tensor.New(1, 3, h, w)
	for i := range x.Data() {
		x.Data()[i] = float32(r.Float64()*2 - 1)
	}
	return x
}

func checkFinite(t *testing.T, name string, x *tensor.Tensor, shape ...int) {
	t.Helper()
	if !tensor.SameShape(x.Shape(), shape) {
		t.Fatalf("%s: shape %v, want %v", name, x.Shape(), shape)
	}
	for i, v := range x.Data() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: non-finite value %v at %d", name, v, i)
		}
	}
}

// TestSD21BaseRandom runs the full-size SD 2.1-base VAE with random weights:
// encode and decode at 512×512.
func TestSD21BaseRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size SD 2.1-base VAE at 512x512 (tens of seconds with fast kernels)")
	}
	cfg := SD21BaseConfig()
	m := randomSD(t)
	x := randomImage(512, 512)
	opt := TileOptions{Enabled: true} // the OSEDiff defaults: no tiling at this size

	start := time.Now()
	mom := m.Encode(x, opt)
	enc := time.Since(start)
	checkFinite(t, "moments", mom, 1, 8, 64, 64)

	z := mom.Narrow(1, 0, cfg.LatentChannels).Contiguous()
	start = time.Now()
	img := m.Decode(z, opt)
	dec := time.Since(start)
	checkFinite(t, "decoded", img, 1, 3, 512, 512)
	t.Logf("SD 2.1-base VAE 512x512: encode %.2fs (%.1f GFLOP/s), decode %.2fs (%.1f GFLOP/s)",
		enc.Seconds(), EncoderFLOPs(cfg, 512, 512)/enc.Seconds()/1e9,
		dec.Seconds(), DecoderFLOPs(cfg, 64, 64)/dec.Seconds()/1e9)
}

func benchmarkStage(b *testing.B, flops float64, run func()) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	s := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(s, "s/op")
	b.ReportMetric(flops/s/1e9, "GFLOP/s")
}

// BenchmarkSD21Encode512 is the baseline's "VAE encode" stage: encoder +
// quant_conv on a 512×512 image.
func BenchmarkSD21Encode512(b *testing.B) {
	m := randomSD(b)
	x := randomImage(512, 512)
	benchmarkStage(b, EncoderFLOPs(m.Cfg, 512, 512), func() { m.Encode(x, TileOptions{}) })
}

// BenchmarkSD21Decode512 is the baseline's "VAE decode" stage:
// post_quant_conv + decoder from a 64×64 latent.
func BenchmarkSD21Decode512(b *testing.B) {
	m := randomSD(b)
	z := randomImage(64, 64).Reshape(1, 3, 64, 64)
	lat := tensor.New(1, 4, 64, 64)
	copy(lat.Data(), z.Data())
	benchmarkStage(b, DecoderFLOPs(m.Cfg, 64, 64), func() { m.Decode(lat, TileOptions{}) })
}
