package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

func randT(r *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.New(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(r.NormFloat64())
	}
	return t
}

func close32(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s: element %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ rows, in, out int }{{1, 1, 1}, {3, 5, 7}, {77, 33, 65}, {2, 128, 17}} {
		l := NewLinear(c.in, c.out, true)
		l.Weight.SetData(randT(r, c.out, c.in).Data())
		l.Bias.SetData(randT(r, c.out).Data())
		x := randT(r, 1, c.rows, c.in)
		y := l.Forward(x)
		want := make([]float32, c.rows*c.out)
		for i := 0; i < c.rows; i++ {
			for o := 0; o < c.out; o++ {
				s := float64(l.Bias.Data()[o])
				for k := 0; k < c.in; k++ {
					s += float64(x.Data()[i*c.in+k]) * float64(l.Weight.Data()[o*c.in+k])
				}
				want[i*c.out+o] = float32(s)
			}
		}
		if !tensor.SameShape(y.Shape(), []int{1, c.rows, c.out}) {
			t.Fatalf("shape %v", y.Shape())
		}
		close32(t, "linear", y.Data(), want, 1e-5)
	}
}

func TestConvNormsAndOps(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c := NewConv2d(3, 5, 3, 2, 1, true)
	c.P.PadT, c.P.PadL, c.P.PadB, c.P.PadR = 0, 0, 1, 1 // the VAE's asymmetric pad
	c.Weight.SetData(randT(r, 5, 3, 3, 3).Data())
	c.Bias.SetData(randT(r, 5).Data())
	x := randT(r, 1, 3, 9, 8)
	y := c.Forward(x)
	if !tensor.SameShape(y.Shape(), []int{1, 5, 4, 4}) {
		t.Fatalf("conv shape %v", y.Shape())
	}
	// One output element by hand: o=2, i=3, j=1.
	s := float64(c.Bias.Data()[2])
	for ch := 0; ch < 3; ch++ {
		for u := 0; u < 3; u++ {
			for v := 0; v < 3; v++ {
				yy, xx := 3*2+u, 1*2+v
				if yy < 9 && xx < 8 {
					s += float64(x.At(0, ch, yy, xx)) * float64(c.Weight.At(2, ch, u, v))
				}
			}
		}
	}
	close32(t, "conv", []float32{y.At(0, 2, 3, 1)}, []float32{float32(s)}, 1e-5)

	g := NewGroupNorm(2, 4, 1e-6)
	g.Weight.SetData([]float32{1, 2, 1, 1})
	g.Bias.SetData([]float32{0, 0, 1, 0})
	gx := randT(r, 1, 4, 3, 3)
	gy := g.Forward(gx, false)
	var mean, v float64
	for i := 0; i < 18; i++ {
		mean += float64(gx.Data()[i])
	}
	mean /= 18
	for i := 0; i < 18; i++ {
		d := float64(gx.Data()[i]) - mean
		v += d * d
	}
	want := float32((float64(gx.Data()[9]) - mean) / math.Sqrt(v/18+1e-6) * 2)
	close32(t, "groupnorm", []float32{gy.Data()[9]}, []float32{want}, 1e-5)
	gs := g.Forward(gx, true)
	w0 := gy.Data()[0]
	close32(t, "groupnorm+silu", []float32{gs.Data()[0]}, []float32{w0 / (1 + float32(math.Exp(float64(-w0))))}, 1e-5)

	ln := NewLayerNorm(4, 1e-5)
	ln.Weight.SetData([]float32{1, 1, 1, 1})
	ln.Bias.SetData([]float32{0, 0, 0, 0})
	lo := ln.Forward(tensor.FromData([]float32{1, 2, 3, 4}, 1, 4)).Data()
	close32(t, "layernorm", lo, []float32{-1.3416, -0.4472, 0.4472, 1.3416}, 1e-4)

	e := NewEmbedding(3, 2)
	e.Weight.SetData([]float32{0, 1, 2, 3, 4, 5})
	close32(t, "embedding", e.Forward([]int{2, 0}).Data(), []float32{4, 5, 0, 1}, 0)

	a := tensor.FromData([]float32{1, 2, 3, 4}, 1, 1, 2, 2)
	close32(t, "upsample", Upsample2x(a).Data(), []float32{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, 0)
	cat := ConcatChannels(a, tensor.FromData([]float32{5, 6, 7, 8, 9, 10, 11, 12}, 1, 2, 2, 2))
	close32(t, "concat", cat.Data(), []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 0)
	close32(t, "add", Add(a, a).Data(), []float32{2, 4, 6, 8}, 0)
	close32(t, "gelu", GELU(tensor.FromData([]float32{1}, 1)).Data(), []float32{0.8413447}, 1e-6)
	close32(t, "silu", SiLU(tensor.FromData([]float32{1}, 1)).Data(), []float32{0.7310586}, 1e-6)
}

// TestConvShrinkInPlace checks ForwardShrinkInPlace against Forward: in
// place for 1×1 convolutions that narrow the channels of one sample (pixel
// counts around the band size and the kernels' awkward sizes, with and
// without bias, float32 and float16 weights), and Forward itself, x
// untouched, for everything else.
func TestConvShrinkInPlace(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	band := func(outC int) int { return max(64, shrinkBandBytes/(4*outC)/64*64) }
	cases := []struct {
		name          string
		in, out, k, n int
		h, w          int
		bias, f16     bool
		inPlace       bool
	}{
		{"256→128 one pixel", 256, 128, 1, 1, 1, 1, true, false, true},
		{"8→8 17×1", 8, 8, 1, 1, 17, 1, true, false, true},
		{"33→31 7×9", 33, 31, 1, 1, 7, 9, false, false, true},
		{"64→16 65×63", 64, 16, 1, 1, 65, 63, true, false, true},
		{"32→32 a band and one", 32, 32, 1, 1, 1, band(32) + 1, true, false, true},
		{"48→40 three bands less one", 48, 40, 1, 1, 3, band(40) - 1, true, true, true},
		{"16→32 widens", 16, 32, 1, 1, 5, 5, true, false, false},
		{"3×3", 16, 8, 3, 1, 5, 5, true, false, false},
		{"two samples", 16, 8, 1, 2, 5, 5, true, false, false},
		{"bf16", 32, 16, 1, 1, 4, 4, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConv2d(tc.in, tc.out, tc.k, 1, tc.k/2, tc.bias)
			c.Weight = randT(r, tc.out, tc.in, tc.k, tc.k)
			if tc.bias {
				c.Bias = randT(r, tc.out)
			}
			if tc.f16 {
				if err := c.SetStorage(StoreF16); err != nil {
					t.Fatal(err)
				}
			}
			if tc.name == "bf16" {
				defer SetPrecision(SetPrecision(BF16))
			}
			x := randT(r, tc.n, tc.in, tc.h, tc.w)
			x0 := x.Clone()
			want := c.Forward(x0.Clone())
			got, inPlace := c.ForwardShrinkInPlace(x)
			if inPlace != tc.inPlace {
				t.Fatalf("in place %v, want %v", inPlace, tc.inPlace)
			}
			if !inPlace {
				close32(t, "x untouched", x.Data(), x0.Data(), 0)
			} else if &got.Storage()[0] != &x.Storage()[0] {
				t.Fatal("the result does not share x's buffer")
			}
			if !slices.Equal(got.Shape(), want.Shape()) {
				t.Fatalf("shape %v, want %v", got.Shape(), want.Shape())
			}
			close32(t, "output", got.Data(), want.Data(), 1e-5)
		})
	}
}
