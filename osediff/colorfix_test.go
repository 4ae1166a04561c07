package osediff

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/tensor"
)

// colorfixTol is the ground-truth README's suggested tolerance for the
// colour-fix floats of a float32 port.
const colorfixTol = 5e-3

func readTensor(t *testing.T, file, name string) *tensor.Tensor {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(filepath.Join(refDir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	x, err := checkpoint.ReadTensor(st, name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func maxAbsDiff(a, b []float32) (float64, int) {
	worst, at := 0.0, -1
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	return worst, at
}

// byteDiff is the largest per-byte difference and the number of differing
// bytes between two RGB images of the same size.
func byteDiff(a, b *imageio.RGB8) (maxd, n int) {
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d < 0 {
			d = -d
		}
		if d > 0 {
			n++
		}
		maxd = max(maxd, d)
	}
	return maxd, n
}

// Both colour fixes against the reference floats and PNGs, for the sampled
// and the posterior-mean runs of case main.
func TestColorFixGolden(t *testing.T) {
	fixes := []struct {
		name string
		fn   func(target, source *tensor.Tensor) *tensor.Tensor
	}{
		{"adain", AdaIN},
		{"wavelet", WaveletColorFix},
	}
	for _, run := range []string{"main", "main_mean"} {
		source := imageio.ToTensor(readRef(t, "case_main_input_upscaled.png").RGB)
		target := imageio.ToTensor(readRef(t, "case_"+run+"_output_before_colorfix.png").RGB)
		for _, f := range fixes {
			t.Run(run+"/"+f.name, func(t *testing.T) {
				got := f.fn(target, source)
				want := readTensor(t, "case_"+run+"_pipeline.safetensors", "colorfix_"+f.name+"_float")
				if !tensor.SameShape(got.Shape(), want.Shape()) {
					t.Fatalf("shape %v, want %v", got.Shape(), want.Shape())
				}
				d, at := maxAbsDiff(got.Data(), want.Data())
				t.Logf("colorfix_%s_float max|diff| %.3g", f.name, d)
				if d > colorfixTol {
					t.Fatalf("colorfix_%s_float: max|diff| %.3g at %d (got %v want %v) > %g", f.name, d, at, got.Data()[at], want.Data()[at], colorfixTol)
				}
				img, err := imageio.FromTensor(got)
				if err != nil {
					t.Fatal(err)
				}
				ref := readRef(t, "case_"+run+"_sr_"+f.name+".png").RGB
				maxd, n := byteDiff(img, ref)
				t.Logf("sr_%s.png: %d of %d bytes differ, max %d levels", f.name, n, len(ref.Pix), maxd)
				if maxd > 2 {
					t.Fatalf("sr_%s.png: max byte difference %d > 2", f.name, maxd)
				}
			})
		}
	}
}

func TestAdaINHand(t *testing.T) {
	// Channel of target [0, 1]: mean 0.5, unbiased var 0.5; source [0.2, 0.4]:
	// mean 0.3, var 0.02. out = (x-0.5)/sqrt(0.5+1e-5)*sqrt(0.02+1e-5)+0.3.
	target := tensor.FromData([]float32{0, 1}, 1, 1, 1, 2)
	source := tensor.FromData([]float32{0.2, 0.4}, 1, 1, 2, 1)
	got := AdaIN(target, source).Data()
	k := math.Sqrt(0.02+1e-5) / math.Sqrt(0.5+1e-5)
	want := []float64{0.3 - 0.5*k, 0.3 + 0.5*k}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-6 {
			t.Errorf("out[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestWaveletColorFixProperties(t *testing.T) {
	const h, w = 13, 37
	mk := func(seed int) *tensor.Tensor {
		x := tensor.New(1, 3, h, w)
		for i := range x.Data() {
			x.Data()[i] = float32((i*seed)%97) / 97
		}
		return x
	}
	a := mk(7)
	cases := []struct {
		name           string
		target, source *tensor.Tensor
		want           func(i int) float32
	}{
		// high(x) + low(x) = x up to float32 rounding.
		{"self", a, a, func(i int) float32 { return a.Data()[i] }},
		// A constant source contributes exactly its constant as the low part.
		{"constant", a, tensor.FromData(fill(3*h*w, 0.25), 1, 3, h, w), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := WaveletColorFix(c.target, c.source).Data()
			if c.want != nil {
				for i := range got {
					if d := math.Abs(float64(got[i] - c.want(i))); d > 1e-5 {
						t.Fatalf("out[%d] = %v, want %v", i, got[i], c.want(i))
					}
				}
				return
			}
			// high(target) + 0.25 where high = target - low(target).
			low := WaveletColorFix(tensor.FromData(fill(3*h*w, 0), 1, 3, h, w), c.target).Data()
			for i := range got {
				want := clamp01(c.target.Data()[i] - low[i] + 0.25)
				if d := math.Abs(float64(got[i] - want)); d > 1e-5 {
					t.Fatalf("out[%d] = %v, want %v", i, got[i], want)
				}
			}
		})
	}
}

func fill(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

// AdaIN (the default) over every case and run of the ground truth: the final
// PNG from the reference's own uint8 inputs, within 2 levels.
func TestAdaINPNGAllCases(t *testing.T) {
	cases := []struct{ run, input string }{
		{"main", "main"}, {"main_mean", "main"},
		{"resize", "resize"}, {"resize_mean", "resize"},
		{"tiled", "tiled"}, {"tiled_mean", "tiled"},
		{"tiled_untiled", "tiled"}, {"tiled_untiled_mean", "tiled"},
	}
	for _, c := range cases {
		t.Run(c.run, func(t *testing.T) {
			source := imageio.ToTensor(readRef(t, "case_"+c.input+"_input_upscaled.png").RGB)
			target := imageio.ToTensor(readRef(t, "case_"+c.run+"_output_before_colorfix.png").RGB)
			img, err := imageio.FromTensor(AdaIN(target, source))
			if err != nil {
				t.Fatal(err)
			}
			ref := readRef(t, "case_"+c.run+"_sr_adain.png").RGB
			maxd, n := byteDiff(img, ref)
			t.Logf("%d of %d bytes differ, max %d levels", n, len(ref.Pix), maxd)
			if maxd > 2 {
				t.Fatalf("max byte difference %d > 2", maxd)
			}
		})
	}
}

// waveletBlur against a literal F.pad(replicate) + dilated 3x3 conv.
func TestWaveletBlurNaive(t *testing.T) {
	k := [3][3]float32{{0.0625, 0.125, 0.0625}, {0.125, 0.25, 0.125}, {0.0625, 0.125, 0.0625}}
	for _, sz := range [][2]int{{1, 1}, {2, 3}, {5, 9}, {13, 37}, {40, 17}} {
		h, w := sz[0], sz[1]
		src := make([]float32, h*w)
		for i := range src {
			src[i] = float32(math.Cos(float64(i) * 1.3))
		}
		for _, r := range []int{1, 2, 4, 8, 16} {
			ph, pw := h+2*r, w+2*r
			pad := make([]float32, ph*pw)
			for y := 0; y < ph; y++ {
				for x := 0; x < pw; x++ {
					sy, sx := min(max(y-r, 0), h-1), min(max(x-r, 0), w-1)
					pad[y*pw+x] = src[sy*w+sx]
				}
			}
			got := make([]float32, h*w)
			waveletBlur(got, src, h, w, r)
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					var acc float32
					for ky := 0; ky < 3; ky++ {
						for kx := 0; kx < 3; kx++ {
							acc += pad[(y+ky*r)*pw+x+kx*r] * k[ky][kx]
						}
					}
					if got[y*w+x] != acc {
						t.Fatalf("%dx%d r=%d (%d,%d): %v, want %v", h, w, r, x, y, got[y*w+x], acc)
					}
				}
			}
		}
	}
}

// BenchmarkColorFix: 2048x1536 outputs (a 512x384 input at x4).
func BenchmarkColorFix(b *testing.B) {
	x := tensor.New(1, 3, 1536, 2048)
	y := tensor.New(1, 3, 1536, 2048)
	for i := range x.Data() {
		x.Data()[i] = float32(i%251) / 251
		y.Data()[i] = float32(i%241) / 241
	}
	b.Run("adain", func(b *testing.B) {
		for b.Loop() {
			AdaIN(x, y)
		}
	})
	b.Run("wavelet", func(b *testing.B) {
		for b.Loop() {
			WaveletColorFix(x, y)
		}
	})
}
