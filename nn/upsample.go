package nn

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// Nearest-neighbour ×2 upsampling followed by a 3×3 convolution (stride 1,
// padding 1), as diffusers' Upsample2D does, computed without the upsampled
// image: output pixel (2i+a, 2j+b) only ever reads input pixels of rows
// {i−1, i} (a = 0) or {i, i+1} (a = 1), and of the same two columns by b.
// So each of the four output phases (a, b) is a 2×2 convolution of x whose
// taps are the 3×3 taps that land on the same input pixel, summed:
//
//	rows of phase a = 0: tap row 0 | tap rows 1+2      (input rows i−1, i)
//	rows of phase a = 1: tap rows 0+1 | tap row 2      (input rows i, i+1)
//
// and likewise for the columns. That is 4/9 of the multiply-adds of the
// convolution on the upsampled image (and no ×4 image to build); the result
// differs from it only by the rounding of the summed taps.
var upsampleTapRows = [2][2][]int{{{0}, {1, 2}}, {{0, 1}, {2}}}

// UpsamplePhaseWeights returns the four 2×2 weight sets [OutC][InC][2][2]
// of phases (a, b) at index 2a+b for a 3×3 convolution weight w
// [OutC][InC][3][3] (row-major float32).
func UpsamplePhaseWeights(w []float32, outC, inC int) [4][]float32 {
	var ph [4][]float32
	for a := 0; a < 2; a++ {
		for b := 0; b < 2; b++ {
			d := make([]float32, outC*inC*4)
			parallel.For(outC*inC, 256, func(lo, hi int) {
				for oc := lo; oc < hi; oc++ {
					src := w[oc*9 : oc*9+9]
					for u := 0; u < 2; u++ {
						for v := 0; v < 2; v++ {
							var s float32
							for _, r := range upsampleTapRows[a][u] {
								for _, c := range upsampleTapRows[b][v] {
									s += src[r*3+c]
								}
							}
							d[oc*4+u*2+v] = s
						}
					}
				}
			})
			ph[2*a+b] = d
		}
	}
	return ph
}

// CanUpsampleConv reports whether ForwardUpsample2x applies: a 3×3,
// stride-1, padding-1 convolution whose weights are held in float32 or
// float16 and that does not run in bf16 (those keep the upsampled-image
// path, in their precision).
func (c *Conv2d) CanUpsampleConv() bool {
	p := c.P
	return p.KH == 3 && p.KW == 3 && p.StrideH <= 1 && p.StrideW <= 1 && max(p.DilH, 1) == 1 && max(p.DilW, 1) == 1 &&
		p.PadT == 1 && p.PadB == 1 && p.PadL == 1 && p.PadR == 1 && !c.useBF16() && (c.w16 != nil || c.Weight.HasData())
}

// ForwardUpsample2x maps x [N, InC, h, w] to conv(upsample2x(x)) [N, OutC,
// 2h, 2w] by the four phase convolutions (see UpsamplePhaseWeights), in
// bands of input rows whose buffers take about bandBytes. It panics unless
// CanUpsampleConv.
func (c *Conv2d) ForwardUpsample2x(x *tensor.Tensor, bandBytes int) *tensor.Tensor {
	if !c.CanUpsampleConv() {
		panic(fmt.Sprintf("nn.Conv2d: ForwardUpsample2x needs a 3×3, stride-1, padding-1 float convolution, have %+v", c.P))
	}
	if x.Rank() != 4 || x.Dim(1) != c.P.InC {
		panic(fmt.Sprintf("nn.Conv2d: input %v, want [N, %d, H, W]", x.Shape(), c.P.InC))
	}
	x = x.Contiguous()
	n, ch, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	oc := c.P.OutC
	H, W := 2*h, 2*w
	y := tensor.Empty(n, oc, H, W) // [N, OC, 2h, 2w], written in full
	wm := c.Mat()
	wf := wm.F32
	if wm.F16 != nil {
		wf = make([]float32, len(wm.F16))
		kernels.WidenF16(wf, wm.F16)
	}
	ph := UpsamplePhaseWeights(wf, oc, ch) // 4 × [OC, C, 2, 2]
	var bias []float32
	if c.Bias != nil {
		bias = c.Bias.Data()
	}
	// A band of rows input rows needs, per parity a, rows+1 input rows
	// [C, rows+1, w] and four outputs [OC, rows, w].
	rows := min(max(bandBytes/(4*w*(2*ch+4*oc))-1, 1), h)
	bands := make([]float32, 2*ch*(rows+1)*w)
	outs := make([]float32, 4*oc*rows*w)
	xd, yd := x.Data(), y.Data()
	for bi := 0; bi < n; bi++ {
		xb := xd[bi*ch*h*w : (bi+1)*ch*h*w]
		for i0 := 0; i0 < h; i0 += rows {
			i1 := min(i0+rows, h)
			nr := i1 - i0
			for a := 0; a < 2; a++ {
				// Input rows of parity a: [i0−1, i1) or [i0, i1+1), the
				// convolution's zero padding outside x.
				lo, hi := i0-1+a, i1+a
				padT, padB := 0, 0
				if lo < 0 {
					lo, padT = 0, 1
				}
				if hi > h {
					hi, padB = h, 1
				}
				br := hi - lo
				band := bands[a*ch*(rows+1)*w:][:ch*br*w] // [C, br, w]
				parallel.For(ch, 1, func(c0, c1 int) {
					for k := c0; k < c1; k++ {
						copy(band[k*br*w:(k+1)*br*w], xb[(k*h+lo)*w:(k*h+hi)*w])
					}
				})
				for b := 0; b < 2; b++ {
					p := kernels.Conv2DParams{InC: ch, OutC: oc, KH: 2, KW: 2, StrideH: 1, StrideW: 1,
						PadT: padT, PadB: padB, PadL: 1 - b, PadR: b}
					kernels.Conv2D(p, 1, br, w, band, ph[2*a+b], bias, outs[(2*a+b)*oc*nr*w:][:oc*nr*w]) // [OC, nr, w]
				}
			}
			// Interleave the phases into rows 2i0 … 2i1 of y, on every
			// worker (y is fresh memory: this also takes its page faults).
			parallel.For(oc, 1, func(c0, c1 int) {
				for o := c0; o < c1; o++ {
					for i := 0; i < nr; i++ {
						for a := 0; a < 2; a++ {
							src := func(b int) []float32 { return outs[((2*a+b)*oc+o)*nr*w+i*w:][:w] }
							kernels.Zip(yd[((bi*oc+o)*H+2*(i0+i)+a)*W:][:W], src(0), src(1))
						}
					}
				}
			})
		}
	}
	return y
}
