package kernels

import "testing"

func benchNamed(b *testing.B, name string) {
	r, err := RunBenchmark(name, 1)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, _ = RunBenchmark(name, 1)
	}
	b.ReportMetric(r.GFLOPs, "GFLOP/s")
	b.ReportMetric(r.PercentOfPeak, "%peak")
	if r.VsCopy > 0 {
		b.ReportMetric(r.VsCopy, "x_copy")
	}
}

func BenchmarkSgemm2048(b *testing.B)            { benchNamed(b, "sgemm_2048") }
func BenchmarkConv3x3_128_256(b *testing.B)      { benchNamed(b, "conv3x3_128_256") }
func BenchmarkConv3x3_256_128(b *testing.B)      { benchNamed(b, "conv3x3_256_128") }
func BenchmarkConv3x3_512_64(b *testing.B)       { benchNamed(b, "conv3x3_512_64") }
func BenchmarkAttention4096x64x5(b *testing.B)   { benchNamed(b, "attention_4096x64x5") }
func BenchmarkGroupNormSiLU128_512(b *testing.B) { benchNamed(b, "groupnorm_silu_128_512") }

func TestRunBenchmarkUnknown(t *testing.T) {
	if _, err := RunBenchmark("nope", 1); err == nil {
		t.Fatal("want an error for an unknown shape")
	}
}
