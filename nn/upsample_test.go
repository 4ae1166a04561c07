package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// TestForwardUpsample2x: the four phase convolutions give conv(upsample2x(x))
// (the rounding of the summed taps aside) at awkward sizes, with bands of
// one row up to the whole image, batches, and float16-held weights.
func TestForwardUpsample2x(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ n, in, out, h, w int }{{1, 1, 1, 1, 1}, {1, 3, 5, 2, 3}, {2, 4, 6, 5, 7}, {1, 8, 16, 9, 17}, {1, 16, 8, 17, 33}, {1, 5, 3, 4, 32}} {
		for _, f16 := range []bool{false, true} {
			conv := NewConv2d(c.in, c.out, 3, 1, 1, true)
			conv.Weight.SetData(randT(r, c.out, c.in, 3, 3).Data())
			conv.Bias.SetData(randT(r, c.out).Data())
			if f16 {
				conv.SetStorage(StoreF16)
			}
			if !conv.CanUpsampleConv() {
				t.Fatalf("%+v: CanUpsampleConv false", c)
			}
			x := randT(r, c.n, c.in, c.h, c.w)
			want := conv.Forward(Upsample2x(x)) // [N, OC, 2h, 2w]
			for _, tc := range []struct{ band, chunk int }{
				{1, 1 << 30}, {4 * c.w * (2*c.in + 4*c.out) * 3, 1 << 30}, {1 << 30, 1 << 30},
				{1 << 30, 1}, {4 * c.w * (2*c.in + 4*c.out) * 3, 16 * 4 * c.in * 3}, // chunks of 1 and 3 output channels
			} {
				band := tc.band
				prev := phaseChunkBytes
				phaseChunkBytes = tc.chunk
				got := conv.ForwardUpsample2x(x, band)
				phaseChunkBytes = prev
				if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape()) {
					t.Fatalf("%+v: shape %v, want %v", c, got.Shape(), want.Shape())
				}
				// Each output sums 9·InC unit-variance products in another
				// order: a few float32 ulps of their √(9·InC) spread.
				tol := 3e-6 * math.Sqrt(float64(9*c.in))
				close32(t, fmt.Sprintf("%+v f16=%v band %d chunk %d", c, f16, band, tc.chunk), got.Data(), want.Data(), tol)
			}
		}
	}
}

// TestPhaseWeights: the unrolled phase weights equal the loop over
// upsampleTapRows bit for bit (signed zeros included), for float32 and
// float16 weights and any range of output channels.
func TestPhaseWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const outC, inC = 7, 5
	w := make([]float32, outC*inC*9)
	for i := range w {
		w[i] = float32(r.NormFloat64())
		if i%11 == 3 {
			w[i] = float32(math.Copysign(0, -1))
		}
	}
	want := func(w []float32, o, c, q, u, v int) float32 {
		a, b := q/2, q%2
		var s float32
		for _, rr := range upsampleTapRows[a][u] {
			for _, cc := range upsampleTapRows[b][v] {
				s += w[(o*inC+c)*9+rr*3+cc]
			}
		}
		return s
	}
	h := make([]uint16, len(w))
	wh := make([]float32, len(w))
	for i, v := range w {
		h[i] = tensor.F32ToF16(v)
		wh[i] = tensor.F16ToF32(h[i])
	}
	for _, f16 := range []bool{false, true} {
		m, ref := kernels.F32(w), w
		if f16 {
			m, ref = kernels.Mat{F16: h}, wh
		}
		for _, rg := range [][2]int{{0, outC}, {2, 3}, {1, 6}} {
			o0, o1 := rg[0], rg[1]
			n := o1 - o0
			dst := make([]float32, 4*n*inC*4)
			phaseWeights(dst, m, inC, o0, o1)
			for q := 0; q < 4; q++ {
				for o := 0; o < n; o++ {
					for c := 0; c < inC; c++ {
						for u := 0; u < 2; u++ {
							for v := 0; v < 2; v++ {
								got := dst[((q*n+o)*inC+c)*4+u*2+v]
								if e := want(ref, o0+o, c, q, u, v); math.Float32bits(got) != math.Float32bits(e) {
									t.Fatalf("f16=%v channels %v phase %d [%d][%d][%d][%d] = %v, want %v", f16, rg, q, o, c, u, v, got, e)
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestBF16Upsample2x: in BF16 an exact ×2 runs the four phase convolutions
// on phase weights summed in float32 and rounded to bf16 once, with x
// rounded to bf16: against that sum computed in float64 (the products of
// bf16 values are exact in float32, so only the float32 accumulation
// differs: 1e-5 of the summed magnitudes), at awkward sizes and bands; a
// second call (cached weights) gives the same bits, and after DropPacked
// FP32 gives the float32 path's bits again. With StoreBF16 the phase
// weights become the layer's only copy and still run in FP32 precision.
func TestBF16Upsample2x(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	defer SetPrecision(SetPrecision(FP32))
	for _, c := range []struct{ n, in, out, h, w int }{{1, 1, 1, 1, 1}, {1, 3, 5, 2, 3}, {2, 4, 6, 5, 7}, {1, 8, 16, 9, 17}, {1, 16, 8, 17, 33}, {1, 5, 3, 4, 32}} {
		for _, store := range []Storage{StoreF32, StoreF16, StoreBF16} {
			name := fmt.Sprintf("%+v %v", c, store)
			conv := NewConv2d(c.in, c.out, 3, 1, 1, true)
			conv.Weight.SetData(randT(r, c.out, c.in, 3, 3).Data())
			conv.Bias.SetData(randT(r, c.out).Data())
			if err := conv.SetStorage(store); err != nil {
				t.Fatal(err)
			}
			x := randT(r, c.n, c.in, c.h, c.w)
			SetPrecision(FP32)
			want32 := conv.ForwardUpsample2x(x, 1<<30).Clone()
			// The reference: phase weights in float32, rounded to bf16.
			ph := make([]float32, 4*c.out*c.in*4)
			phaseWeights(ph, conv.Mat(), c.in, 0, c.out)
			xd, bias := x.Data(), conv.Bias.Data()
			ref := make([]float64, len(want32.Data()))
			mag := make([]float64, len(ref))
			H, W := 2*c.h, 2*c.w
			for b := 0; b < c.n; b++ {
				for o := 0; o < c.out; o++ {
					for y := 0; y < H; y++ {
						for xx := 0; xx < W; xx++ {
							i, a, j, bb := y/2, y%2, xx/2, xx%2
							q := 2*a + bb
							s, m := float64(bias[o]), math.Abs(float64(bias[o]))
							for ci := 0; ci < c.in; ci++ {
								for u := 0; u < 2; u++ {
									for v := 0; v < 2; v++ {
										ii, jj := i+u-1+a, j+v-1+bb
										if ii < 0 || ii >= c.h || jj < 0 || jj >= c.w {
											continue
										}
										wv := float64(roundBF16(ph[((q*c.out+o)*c.in+ci)*4+2*u+v]))
										xv := float64(roundBF16(xd[((b*c.in+ci)*c.h+ii)*c.w+jj]))
										s += wv * xv
										m += math.Abs(wv * xv)
									}
								}
							}
							k := ((b*c.out+o)*H+y)*W + xx
							ref[k], mag[k] = s, m
						}
					}
				}
			}
			SetPrecision(BF16)
			for _, band := range []int{1, 4 * c.w * (2*c.in + 4*c.out) * 3, 1 << 30} {
				got := conv.ForwardUpsample2x(x, band)
				for k, g := range got.Data() {
					if d := math.Abs(float64(g) - ref[k]); !(d <= 1e-5*mag[k]+1e-30) {
						t.Fatalf("%s band %d: y[%d] = %g, want %g (±%g)", name, band, k, g, ref[k], 1e-5*mag[k])
					}
				}
				again := conv.ForwardUpsample2x(x, band)
				for k, g := range again.Data() {
					if math.Float32bits(g) != math.Float32bits(got.Data()[k]) {
						t.Fatalf("%s band %d: second call differs at %d", name, band, k)
					}
				}
			}
			if store == StoreBF16 && BF16Native() {
				if conv.w16 != nil || conv.Weight.HasData() || conv.PackedBytes() == 0 || !conv.CanUpsampleConv() {
					t.Fatalf("%s: the packed phase weights are not the only copy", name)
				}
				SetPrecision(FP32)
				got := conv.ForwardUpsample2x(x, 1<<30)
				for k, g := range got.Data() {
					if d := math.Abs(float64(g) - ref[k]); !(d <= 1e-5*mag[k]+1e-30) {
						t.Fatalf("%s packed-only in FP32 precision: y[%d] = %g, want %g", name, k, g, ref[k])
					}
				}
				continue
			}
			conv.DropPacked()
			if conv.PackedBytes() != 0 {
				t.Fatalf("%s: DropPacked kept %d bytes", name, conv.PackedBytes())
			}
			SetPrecision(FP32)
			back := conv.ForwardUpsample2x(x, 1<<30)
			for k, g := range back.Data() {
				if math.Float32bits(g) != math.Float32bits(want32.Data()[k]) {
					t.Fatalf("%s: FP32 after BF16 differs at %d", name, k)
				}
			}
		}
	}
}

// roundBF16 rounds to the nearest bfloat16 (ties to even), as the bf16
// kernels round their operands.
func roundBF16(f float32) float32 {
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}
