package unet

import (
	"fmt"
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
