package unet

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// TestNearestIndex pins F.interpolate(mode="nearest") source indices as
// PyTorch computes them (floor(dst·in/out) in float32).
func TestNearestIndex(t *testing.T) {
	for _, c := range []struct {
		in, out int
		want    []int
	}{
		{3, 5, []int{0, 0, 1, 1, 2}},
		{2, 4, []int{0, 0, 1, 1}},
		{3, 6, []int{0, 0, 1, 1, 2, 2}},
		{5, 10, []int{0, 0, 1, 1, 2, 2, 3, 3, 4, 4}},
		{1, 1, []int{0}},
		{2, 3, []int{0, 0, 1}},
		{4, 7, []int{0, 0, 1, 1, 2, 2, 3}},
	} {
		if got := nearestIndex(c.in, c.out); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("nearestIndex(%d, %d) = %v, want %v", c.in, c.out, got, c.want)
		}
	}
}

func TestResizeNearest(t *testing.T) {
	x := tensor.FromData([]float32{1, 2, 3, 4, 5, 6}, 1, 1, 2, 3) // [[1 2 3] [4 5 6]]
	for _, c := range []struct {
		oh, ow int
		want   []float32
	}{
		{4, 6, []float32{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6}},
		{4, 5, []float32{1, 1, 2, 2, 3, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 4, 4, 5, 5, 6}},
		{3, 3, []float32{1, 2, 3, 1, 2, 3, 4, 5, 6}},
	} {
		got := resizeNearest(x, c.oh, c.ow)
		if fmt.Sprint(got.Shape()) != fmt.Sprint([]int{1, 1, c.oh, c.ow}) || fmt.Sprint(got.Data()) != fmt.Sprint(c.want) {
			t.Errorf("resize to %dx%d = %v %v, want %v", c.oh, c.ow, got.Shape(), got.Data(), c.want)
		}
	}
}

// TestTimesteps checks the sinusoidal embedding against values computed
// with diffusers' get_timestep_embedding formula.
func TestTimesteps(t *testing.T) {
	p := Timesteps{NumChannels: 4, FlipSinToCos: true}
	// half = 2, freqs = exp(-ln(1e4)·[0, 1]/2) = [1, 0.01]; t = 2:
	// [cos 2, cos 0.02, sin 2, sin 0.02]
	want := []float32{-0.41614684, 0.99980003, 0.9092974, 0.019998667}
	got := p.Forward(2, 2)
	if fmt.Sprint(got.Shape()) != "[2 4]" {
		t.Fatalf("shape %v", got.Shape())
	}
	for b := range 2 {
		for i, w := range want {
			if d := got.At(b, i) - w; d > 1e-6 || d < -1e-6 {
				t.Errorf("emb[%d,%d] = %v, want %v", b, i, got.At(b, i), w)
			}
		}
	}
	p.FlipSinToCos = false
	if g := p.Forward(2, 1); g.At(0, 0) != want[2] || g.At(0, 2) != want[0] {
		t.Errorf("flip_sin_to_cos false: %v", g.Data())
	}
}

// TestUpsample2DPhases: an exact ×2 through the phase convolutions equals
// resizing and convolving (the summed taps' rounding aside), with the band
// buffers forced down to one input row; a non-×2 size takes the resize.
func TestUpsample2DPhases(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	u := NewUpsample2D(6)
	fill := func(tt *tensor.Tensor) {
		for i := range tt.Data() {
			tt.Data()[i] = float32(r.NormFloat64())
		}
	}
	u.Conv.Weight.SetData(make([]float32, 6*6*9))
	u.Conv.Bias.SetData(make([]float32, 6))
	fill(u.Conv.Weight)
	fill(u.Conv.Bias)
	x := tensor.New(2, 6, 5, 7)
	fill(x)
	defer func(b int, v bool) { upsampleBandBytes, upsampleViaImage = b, v }(upsampleBandBytes, upsampleViaImage)
	for _, oh := range []int{10, 9} {
		upsampleViaImage = true
		want := u.Forward(x, oh, 14)
		upsampleViaImage = false
		for _, band := range []int{1, 16 << 20} {
			upsampleBandBytes = band
			got := u.Forward(x, oh, 14)
			if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape()) {
				t.Fatalf("oh %d: shape %v, want %v", oh, got.Shape(), want.Shape())
			}
			for i, w := range want.Data() {
				if d := math.Abs(float64(got.Data()[i] - w)); d > 3e-6*math.Sqrt(9*6)*math.Max(1, math.Abs(float64(w))) {
					t.Fatalf("oh %d band %d: element %d = %g, want %g", oh, band, i, got.Data()[i], w)
				}
			}
		}
	}
}
