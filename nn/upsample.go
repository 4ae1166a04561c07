package nn

import (
	"fmt"
	"slices"
	"sync"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/kernels/bf16"
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

// phaseWeights writes the four phases' weights of output channels [o0, o1)
// of the 3×3 weight w [OutC][InC][3][3] (float32 or float16) into dst:
// phase q = 2a+b at dst[q·m·inC·4:], [m][inC][2][2] with m = o1−o0. Each
// tap sums the 3×3 taps of upsampleTapRows in the order of the loop
//
//	s = 0; for r in rows(a,u) { for c in rows(b,v) { s += w[r][c] } }
//
// written out below. A float16 weight is widened a row (one output channel)
// at a time.
func phaseWeights(dst []float32, w kernels.Mat, inC, o0, o1 int) {
	m := o1 - o0
	k := inC * 9
	parallel.For(m, 8, func(lo, hi int) {
		var row []float32
		if w.Half() {
			row = make([]float32, k)
		}
		for o := lo; o < hi; o++ {
			src := row
			if w.Half() {
				w.Read(row, (o0+o)*k)
			} else {
				src = w.F32[(o0+o)*k : (o0+o+1)*k]
			}
			var d [4][]float32
			for q := range d {
				d[q] = dst[(q*m+o)*inC*4 : (q*m+o+1)*inC*4]
			}
			for c := 0; c < inC; c++ {
				t := (*[9]float32)(src[c*9 : c*9+9])
				w0, w1, w2, w3, w4, w5, w6, w7, w8 := t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
				z := float32(0) // the loop's start: 0 + w turns −0 into +0
				p := (*[4]float32)(d[0][c*4 : c*4+4])
				p[0], p[1], p[2], p[3] = z+w0, z+w1+w2, z+w3+w6, z+w4+w5+w7+w8
				p = (*[4]float32)(d[1][c*4 : c*4+4])
				p[0], p[1], p[2], p[3] = z+w0+w1, z+w2, z+w3+w4+w6+w7, z+w5+w8
				p = (*[4]float32)(d[2][c*4 : c*4+4])
				p[0], p[1], p[2], p[3] = z+w0+w3, z+w1+w2+w4+w5, z+w6, z+w7+w8
				p = (*[4]float32)(d[3][c*4 : c*4+4])
				p[0], p[1], p[2], p[3] = z+w0+w1+w3+w4, z+w2+w5, z+w6+w7, z+w8
			}
		}
	})
}

// phaseChunkBytes bounds the phase weights ForwardUpsample2x holds at once:
// it convolves the output channels in chunks whose four weight sets fit
// (the SD 2.1 UNet's 1280→1280 upsamplers would otherwise need 105 MB of
// them per call, the VAE's 512→512 17 MB).
var phaseChunkBytes = 32 << 20

// upScratch keeps ForwardUpsample2x's buffers (phase weights, input bands,
// phase outputs: at most phaseChunkBytes + bandBytes) for the next call, so
// that a call pays neither for new pages nor for zeroing them.
var upScratch struct {
	sync.Mutex
	free [][]float32
}

// getUpScratch returns a buffer of n values (unspecified contents): the
// smallest kept one that holds n, else a new one.
func getUpScratch(n int) []float32 {
	upScratch.Lock()
	defer upScratch.Unlock()
	best := -1
	for i, b := range upScratch.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(upScratch.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return tensor.Alloc(n)
	}
	b := upScratch.free[best]
	upScratch.free = slices.Delete(upScratch.free, best, best+1)
	return b[:n]
}

// putUpScratch keeps b for a later getUpScratch (at most four buffers: two
// calls' worth when two pipelines run at once).
func putUpScratch(b []float32) {
	upScratch.Lock()
	defer upScratch.Unlock()
	if len(upScratch.free) < 4 {
		upScratch.free = append(upScratch.free, b)
	}
}

// CanUpsampleConv reports whether ForwardUpsample2x applies: a 3×3,
// stride-1, padding-1 convolution whose weights are held in float32 or
// float16, or in bf16 as packed phase weights (bf16Phases; a layer left
// only with its packed 3×3 weights keeps the upsampled-image path).
func (c *Conv2d) CanUpsampleConv() bool {
	p := c.P
	if p.KH != 3 || p.KW != 3 || p.StrideH > 1 || p.StrideW > 1 || max(p.DilH, 1) != 1 || max(p.DilW, 1) != 1 ||
		p.PadT != 1 || p.PadB != 1 || p.PadL != 1 || p.PadR != 1 {
		return false
	}
	packMu.Lock()
	defer packMu.Unlock()
	return c.w16 != nil || c.Weight.HasData() || c.bfUp != nil
}

// bf16Phases returns the four phase convolutions' weights packed for the
// bf16 kernels, made at the first call (or again after the weight tensor was
// re-bound) from the float32 or float16 weights: the taps are summed in
// float32 (phaseWeights) and rounded to bf16 once. With StoreBF16 they then
// become the layer's only copy (16/9 of the 3×3 weights' bf16 size), as
// bf16Left's packed 3×3 weights do for other layers.
func (c *Conv2d) bf16Phases() *[4]*bf16.LeftMatrix {
	packMu.Lock()
	defer packMu.Unlock()
	if c.bfUp != nil && c.sourceGone() {
		return c.bfUp
	}
	m := c.Mat()
	if c.bfUp == nil || c.bfUpSrc != source(m) {
		oc, ch := c.P.OutC, c.P.InC
		ph := make([]float32, 4*oc*ch*4) // 4 × [OC, C, 2, 2]
		phaseWeights(ph, m, ch, 0, oc)
		var up [4]*bf16.LeftMatrix
		p := kernels.Conv2DParams{InC: ch, OutC: oc, KH: 2, KW: 2}
		for q := range up {
			up[q] = bf16.PackConv(p, ph[q*oc*ch*4:(q+1)*oc*ch*4])
		}
		c.bfUp, c.bfUpSrc = &up, source(m)
	}
	if c.packOnly && bf16.Available() && c.bf == nil {
		c.w16, c.bfUpSrc = nil, nil
		c.Weight.DropData()
	}
	return c.bfUp
}

// ForwardUpsample2x maps x [N, InC, h, w] to conv(upsample2x(x)) [N, OutC,
// 2h, 2w] by the four phase convolutions (see phaseWeights), for chunks of
// output channels and in bands of input rows whose buffers take about
// bandBytes. It panics unless CanUpsampleConv.
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
	var bias []float32
	if c.Bias != nil {
		bias = c.Bias.Data()
	}
	// In bf16, the phase weights packed once per layer, all output channels
	// in one chunk; in float32, made per call for the output channels in
	// chunks of ocb, whose four phase weight sets [ocb, C, 2, 2] take at
	// most about phaseChunkBytes.
	var wm kernels.Mat
	var up *[4]*bf16.LeftMatrix
	var ph []float32
	ocb := oc
	if c.useBF16() {
		up = c.bf16Phases()
	} else {
		wm = c.Mat()
		chunks := max(1, (16*4*oc*ch+phaseChunkBytes-1)/phaseChunkBytes)
		ocb = (oc + chunks - 1) / chunks
		ph = getUpScratch(4 * ocb * ch * 4)
		defer putUpScratch(ph)
	}
	// A band of rows input rows needs, per parity a, rows+1 input rows
	// [C, rows+1, w] and four outputs [ocb, rows, w].
	rows := min(max(bandBytes/(4*w*(2*ch+4*ocb))-1, 1), h)
	bands := getUpScratch(2 * ch * (rows + 1) * w)
	defer putUpScratch(bands)
	outs := getUpScratch(4 * ocb * rows * w)
	defer putUpScratch(outs)
	xd, yd := x.Data(), y.Data()
	// The input rows of each parity a of a band: [i0−1, i1) or [i0, i1+1),
	// the convolution's zero padding outside x. They depend on the sample
	// and the band only, so a chunk after the first copies them again only
	// when the image takes several bands or samples.
	type parity struct{ lo, hi, padT, padB int }
	var par [2]parity
	copied := [2]int{-1, -1} // sample and first row of the rows in bands
	for o0 := 0; o0 < oc; o0 += ocb {
		m := min(ocb, oc-o0)
		if up == nil {
			phaseWeights(ph, wm, ch, o0, o0+m) // 4 × [m, C, 2, 2]
		}
		var bm []float32
		if bias != nil {
			bm = bias[o0 : o0+m]
		}
		for bi := 0; bi < n; bi++ {
			xb := xd[bi*ch*h*w : (bi+1)*ch*h*w]
			for i0 := 0; i0 < h; i0 += rows {
				i1 := min(i0+rows, h)
				nr := i1 - i0
				for a := range par {
					pa := parity{lo: i0 - 1 + a, hi: i1 + a}
					if pa.lo < 0 {
						pa.lo, pa.padT = 0, 1
					}
					if pa.hi > h {
						pa.hi, pa.padB = h, 1
					}
					par[a] = pa
				}
				if copied != [2]int{bi, i0} {
					copied = [2]int{bi, i0}
					for a, pa := range par {
						br := pa.hi - pa.lo
						band := bands[a*ch*(rows+1)*w:][:ch*br*w] // [C, br, w]
						parallel.For(ch, 1, func(c0, c1 int) {
							for k := c0; k < c1; k++ {
								copy(band[k*br*w:(k+1)*br*w], xb[(k*h+pa.lo)*w:(k*h+pa.hi)*w])
							}
						})
					}
				}
				for a, pa := range par {
					br := pa.hi - pa.lo
					band := bands[a*ch*(rows+1)*w:][:ch*br*w] // [C, br, w]
					for b := 0; b < 2; b++ {
						q := 2*a + b
						p := kernels.Conv2DParams{InC: ch, OutC: m, KH: 2, KW: 2, StrideH: 1, StrideW: 1,
							PadT: pa.padT, PadB: pa.padB, PadL: 1 - b, PadR: b}
						if up != nil {
							up[q].Conv2D(p, 1, br, w, band, bm, outs[q*m*nr*w:][:m*nr*w]) // [m, nr, w], in bf16
							continue
						}
						kernels.Conv2D(p, 1, br, w, band, ph[q*m*ch*4:(q+1)*m*ch*4], bm, outs[q*m*nr*w:][:m*nr*w]) // [m, nr, w]
					}
				}
				// Interleave the phases into rows 2i0 … 2i1 of y, on every
				// worker (y is fresh memory: this also takes its page faults).
				parallel.For(m, 1, func(c0, c1 int) {
					for o := c0; o < c1; o++ {
						for i := 0; i < nr; i++ {
							for a := 0; a < 2; a++ {
								src := func(b int) []float32 { return outs[((2*a+b)*m+o)*nr*w+i*w:][:w] }
								kernels.Zip(yd[((bi*oc+o0+o)*H+2*(i0+i)+a)*W:][:W], src(0), src(1))
							}
						}
					}
				})
			}
		}
	}
	return y
}
