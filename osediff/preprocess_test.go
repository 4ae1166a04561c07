package osediff

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/osediff-go/osediff/imageio"
)

const refDir = "../testdata/osediff-tiny/ref"

func readRef(t *testing.T, name string) *imageio.Image {
	t.Helper()
	img, err := imageio.ReadFile(filepath.Join(refDir, name), imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// firstDiff describes the first differing byte of two RGB images.
func firstDiff(a, b *imageio.RGB8) string {
	if a.W != b.W || a.H != b.H {
		return fmt.Sprintf("size %dx%d vs %dx%d", a.W, a.H, b.W, b.H)
	}
	n, maxd, first := 0, 0, -1
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d < 0 {
			d = -d
		}
		if d > 0 {
			if first < 0 {
				first = i
			}
			n++
			maxd = max(maxd, d)
		}
	}
	if n == 0 {
		return ""
	}
	p := first / 3
	return fmt.Sprintf("%d bytes differ (max %d), first at x=%d y=%d c=%d: %d vs %d", n, maxd, p%a.W, p/a.W, first%3, a.Pix[first], b.Pix[first])
}

// The chain reproduces test_osediff.py's Pillow resizes bit for bit.
func TestPreprocessGolden(t *testing.T) {
	cases := []struct {
		name        string
		processSize int
		plan        Plan
	}{
		{"main", 128, Plan{InW: 40, InH: 32, PreW: 40, PreH: 32, UpW: 160, UpH: 128, W: 160, H: 128, OutW: 160, OutH: 128}},
		{"resize", 128, Plan{InW: 30, InH: 23, PreResized: true, PreW: 41, PreH: 32, UpW: 164, UpH: 128, W: 160, H: 128, OutW: 120, OutH: 92}},
		{"tiled", 64, Plan{InW: 64, InH: 16, PreW: 64, PreH: 16, UpW: 256, UpH: 64, W: 256, H: 64, OutW: 256, OutH: 64}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lq := readRef(t, "case_"+c.name+"_lq.png")
			want := readRef(t, "case_"+c.name+"_input_upscaled.png")
			got, plan, err := Preprocess(lq.RGB, 4, c.processSize)
			if err != nil {
				t.Fatal(err)
			}
			if plan != c.plan {
				t.Errorf("plan = %+v, want %+v", plan, c.plan)
			}
			if d := firstDiff(got, want.RGB); d != "" {
				t.Fatalf("input_upscaled differs: %s", d)
			}
		})
	}
}

func TestPlanPreprocess(t *testing.T) {
	cases := []struct {
		name        string
		w, h        int
		scale       float64
		processSize int
		want        Plan
		wantErr     bool
	}{
		{"official_x4", 640, 480, 4, 512, Plan{InW: 640, InH: 480, PreW: 640, PreH: 480, UpW: 2560, UpH: 1920, W: 2560, H: 1920, OutW: 2560, OutH: 1920}, false},
		{"small_x4", 100, 50, 4, 512, Plan{InW: 100, InH: 50, PreResized: true, PreW: 256, PreH: 128, UpW: 1024, UpH: 512, W: 1024, H: 512, OutW: 400, OutH: 200}, false},
		{"odd_x4", 33, 129, 4, 512, Plan{InW: 33, InH: 129, PreResized: true, PreW: 128, PreH: 500, UpW: 512, UpH: 2000, W: 512, H: 2000, OutW: 132, OutH: 516}, false},
		{"x1", 131, 67, 1, 64, Plan{InW: 131, InH: 67, PreW: 131, PreH: 67, UpW: 131, UpH: 67, W: 128, H: 64, OutW: 131, OutH: 67}, false},
		// 512 // 2.5 = 204.0 in Python; 2.5 * 205 = 512.5 -> 512.
		{"x2.5", 205, 300, 2.5, 512, Plan{InW: 205, InH: 300, PreW: 205, PreH: 300, UpW: 512, UpH: 750, W: 512, H: 744, OutW: 512, OutH: 750}, false},
		{"x2.5_small", 100, 300, 2.5, 512, Plan{InW: 100, InH: 300, PreResized: true, PreW: 204, PreH: 612, UpW: 510, UpH: 1530, W: 504, H: 1528, OutW: 250, OutH: 750}, false},
		{"too_small", 3, 3, 1, 1, Plan{}, true},
		{"zero", 0, 10, 4, 512, Plan{}, true},
		{"bad_scale", 10, 10, 0, 512, Plan{}, true},
		{"nan_scale", 10, 10, math.NaN(), 512, Plan{}, true},
		{"bad_process", 10, 10, 4, 0, Plan{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := PlanPreprocess(c.w, c.h, c.scale, c.processSize)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if !c.wantErr && got != c.want {
				t.Fatalf("plan\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestScaledSize(t *testing.T) {
	cases := []struct {
		n     int
		scale float64
		want  int
	}{{40, 4, 160}, {100, 0.29, 29}, {41, 2.5, 102}, {7, 1.5, 10}, {1, 1, 1}}
	for _, c := range cases {
		if got := ScaledSize(c.n, c.scale); got != c.want {
			t.Errorf("ScaledSize(%d, %v) = %d, want %d", c.n, c.scale, got, c.want)
		}
	}
}

// Hand-computable Pillow results: a 2x box down-scale is the rounded-up
// average (fixed point: (a+b+1)>>1); equal sizes copy; a constant image
// stays constant under every filter and size.
func TestPillowResampleHand(t *testing.T) {
	row := []uint8{10, 20, 0, 255, 7, 8}
	got, err := pillowResample(row, 6, 1, 1, 3, 1, Box)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{15, 128, 8}; string(got) != string(want) {
		t.Errorf("box 6->3 = %v, want %v", got, want)
	}
	same, _ := pillowResample(row, 3, 2, 1, 3, 2, Lanczos)
	if string(same) != string(row) {
		t.Errorf("same size = %v, want a copy", same)
	}
	for _, f := range []ResampleFilter{Box, Bilinear, Hamming, Bicubic, Lanczos} {
		for _, sz := range [][4]int{{7, 5, 23, 3}, {30, 20, 11, 13}, {9, 9, 9, 40}} {
			src := make([]uint8, sz[0]*sz[1]*3)
			for i := range src {
				src[i] = 77
			}
			out, err := pillowResample(src, sz[0], sz[1], 3, sz[2], sz[3], f)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range out {
				if v != 77 {
					t.Fatalf("%v %v: constant image changed at %d: %d", f, sz, i, v)
				}
			}
		}
	}
	if _, err := pillowResample(row, 6, 1, 1, 0, 1, Box); err == nil {
		t.Error("zero output width: no error")
	}
	if _, err := pillowResample(row, 6, 1, 1, 3, 1, ResampleFilter(42)); err == nil {
		t.Error("unknown filter: no error")
	}
}

// floatResize is a float64 separable resize with Pillow's coefficients but
// no intermediate rounding: Pillow's fixed-point result stays within 1 level
// of it per pass.
func floatResize(src []uint8, w, h, ow, oh int, f ResampleFilter) []float64 {
	pf, _ := f.pillow()
	axis := func(in, out int) (starts, ns []int, ks [][]float64) {
		c := precomputeCoeffs(in, 0, float32(in), out, pf)
		for i := range c.start {
			k := make([]float64, c.n[i])
			for j := range k {
				k[j] = float64(c.k[i*c.ksize+j]) / (1 << precisionBits)
			}
			starts, ns, ks = append(starts, c.start[i]), append(ns, c.n[i]), append(ks, k)
		}
		return
	}
	hs, _, hk := axis(w, ow)
	vs, _, vk := axis(h, oh)
	tmp := make([]float64, ow*h)
	for y := 0; y < h; y++ {
		for x := 0; x < ow; x++ {
			for j, k := range hk[x] {
				tmp[y*ow+x] += k * float64(src[y*w+hs[x]+j])
			}
		}
	}
	out := make([]float64, ow*oh)
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			for j, k := range vk[y] {
				out[y*ow+x] += k * tmp[(vs[y]+j)*ow+x]
			}
		}
	}
	return out
}

func TestPillowResampleVsFloat(t *testing.T) {
	const w, h = 37, 23
	src := make([]uint8, w*h)
	for i := range src {
		src[i] = uint8(128 + 100*math.Sin(float64(i)*0.05))
	}
	for _, f := range []ResampleFilter{Box, Bilinear, Hamming, Bicubic, Lanczos} {
		for _, sz := range [][2]int{{11, 7}, {80, 50}, {37, 9}, {100, 23}, {5, 61}} {
			got, err := ResizeGray(&imageio.Gray8{W: w, H: h, Pix: src}, sz[0], sz[1], f)
			if err != nil {
				t.Fatal(err)
			}
			want := floatResize(src, w, h, sz[0], sz[1], f)
			for i, v := range got.Pix {
				ref := math.Min(math.Max(want[i], 0), 255)
				if math.Abs(float64(v)-ref) > 2 {
					t.Fatalf("%v -> %v: pixel %d = %d, float reference %.2f", f, sz, i, v, want[i])
				}
			}
		}
	}
}

func TestFinalResizeAndAlpha(t *testing.T) {
	p, err := PlanPreprocess(30, 23, 4, 128)
	if err != nil {
		t.Fatal(err)
	}
	img := imageio.NewRGB8(p.W, p.H)
	out, err := FinalResize(img, p)
	if err != nil || out.W != 120 || out.H != 92 {
		t.Fatalf("FinalResize: %v %dx%d, want 120x92", err, out.W, out.H)
	}
	a := imageio.NewGray8(30, 23)
	ra, err := ResizeAlpha(a, p)
	if err != nil || ra.W != 120 || ra.H != 92 {
		t.Fatalf("ResizeAlpha: %v %dx%d", err, ra.W, ra.H)
	}
	same := imageio.NewRGB8(120, 92)
	if out, _ := FinalResize(same, p); out != same {
		t.Error("FinalResize at the output size should return its input")
	}
}

// BenchmarkPreprocess: a 512x384 photo at x4 (official process size).
func BenchmarkPreprocess(b *testing.B) {
	img := imageio.NewRGB8(512, 384)
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 31)
	}
	for b.Loop() {
		if _, _, err := Preprocess(img, 4, 512); err != nil {
			b.Fatal(err)
		}
	}
}
