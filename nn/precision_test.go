package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

func randTensor(r *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.New(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(r.NormFloat64())
	}
	return t
}

// relErr returns ‖a-b‖/‖b‖ and max|a-b|/max|b|.
func relErr(a, b []float32) (rms, maxRel float64) {
	var num, den, md, mb float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
		md = math.Max(md, math.Abs(d))
		mb = math.Max(mb, math.Abs(float64(b[i])))
	}
	return math.Sqrt(num / den), md / mb
}

// In BF16 the layers must agree with FP32 to bf16 accuracy: inputs and
// weights rounded to 8 significant bits give a relative RMS error of a few
// 1e-3 on random data (each product is off by at most 2^-7); the bounds
// below are 1e-2 (RMS) and 3e-2 (max, relative to the largest output).
// Switching back to FP32 must give the float32 results bit for bit.
func TestBF16Layers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	lin := NewLinear(77, 45, true)
	lin.Weight, lin.Bias = randTensor(r, 45, 77), randTensor(r, 45)
	linNoBias := NewLinear(64, 96, false)
	linNoBias.Weight = randTensor(r, 96, 64)
	conv := NewConv2d(5, 12, 3, 1, 1, true)
	conv.Weight, conv.Bias = randTensor(r, 12, 5, 3, 3), randTensor(r, 12)
	down := NewConv2d(8, 16, 3, 2, 1, true)
	down.Weight, down.Bias = randTensor(r, 16, 8, 3, 3), randTensor(r, 16)
	cases := []struct {
		name string
		x    *tensor.Tensor
		fwd  func(*tensor.Tensor) *tensor.Tensor
		drop func()
	}{
		{"Linear", randTensor(r, 2, 19, 77), lin.Forward, lin.DropPacked},
		{"Linear no bias", randTensor(r, 130, 64), linNoBias.Forward, linNoBias.DropPacked},
		{"Conv2d 3x3", randTensor(r, 2, 5, 9, 40), conv.Forward, conv.DropPacked},
		{"Conv2d stride 2", randTensor(r, 1, 8, 17, 32), down.Forward, down.DropPacked},
	}
	defer SetPrecision(SetPrecision(FP32))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			SetPrecision(FP32)
			want := tc.fwd(tc.x).Clone()
			SetPrecision(BF16)
			got := tc.fwd(tc.x)
			again := tc.fwd(tc.x) // from the cached packed weights
			if rms, mx := relErr(got.Data(), want.Data()); rms > 1e-2 || mx > 3e-2 {
				t.Fatalf("bf16 vs fp32: relative RMS error %.3g (max %.3g), want <= 1e-2 (3e-2)", rms, mx)
			} else {
				t.Logf("bf16 vs fp32: relative RMS error %.3g, max %.3g (native bf16: %v)", rms, mx, BF16Native())
			}
			for i, v := range again.Data() {
				if v != got.Data()[i] {
					t.Fatalf("second bf16 Forward differs at %d: %g vs %g", i, v, got.Data()[i])
				}
			}
			tc.drop()
			SetPrecision(FP32)
			back := tc.fwd(tc.x)
			for i, v := range back.Data() {
				if v != want.Data()[i] {
					t.Fatalf("fp32 after bf16 differs at %d: %g vs %g", i, v, want.Data()[i])
				}
			}
		})
	}
}

func TestBF16Repack(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lin := NewLinear(32, 32, false)
	lin.Weight = randTensor(r, 32, 32)
	x := randTensor(r, 4, 32)
	defer SetPrecision(SetPrecision(BF16))
	y1 := lin.Forward(x).Clone()
	if lin.PackedBytes() == 0 {
		t.Fatal("no packed weights after a bf16 Forward")
	}
	// A re-bound weight tensor is packed again; one changed in place needs DropPacked.
	lin.Weight = randTensor(r, 32, 32)
	y2 := lin.Forward(x)
	d1, _ := relErr(y2.Data(), y1.Data())
	if d1 < 0.1 {
		t.Fatalf("new weights gave the old result (relative difference %g)", d1)
	}
	for i := range lin.Weight.Data() {
		lin.Weight.Data()[i] *= 2
	}
	lin.DropPacked()
	y3 := lin.Forward(x)
	for i, v := range y3.Data() {
		if v != 2*y2.Data()[i] {
			t.Fatalf("after DropPacked: y[%d] = %g, want %g", i, v, 2*y2.Data()[i])
		}
	}
	if p, err := ParsePrecision("BF16"); err != nil || p != BF16 || p.String() != "bf16" {
		t.Fatalf("ParsePrecision(BF16) = %v, %v", p, err)
	}
	if _, err := ParsePrecision("fp8"); err == nil {
		t.Fatal("ParsePrecision(fp8) gave no error")
	}
}
