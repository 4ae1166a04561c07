package kernels

import "github.com/osediff-go/osediff/parallel"

// conv2DFast runs the convolution as a GEMM per image: A = weight
// [OutC, InC*KH*KW] read in place, B = the implicit im2col of the image,
// packed panel by panel, C = the output image itself with the bias added in
// the micro-kernel's store (no pass over the output after the GEMM).
//
// The input is first copied, zero-padded, into sh×sw phase images
// (phase (a,b) holds padded pixels (sh*r+a, sw*s+b)), so that every kernel
// tap reads a phase image with unit stride: output pixel (i,j) and tap (u,v)
// read phase ((u*dh)%sh, (v*dw)%sw) at (i+(u*dh)/sh, j+(v*dw)/sw). With
// stride 1 the single phase is the padded image. A packed B panel of nr
// output pixels that lies in one output row is thus, for every row of
// im2col, one contiguous copy (packRows in assembly); panels that straddle
// rows (when the output width is not a multiple of nr) copy per segment.
// When no panel straddles rows (nr divides the output width) the B panels
// are not packed at all: the indirect micro-kernel (gemmArch.ki) reads each
// row of a panel in place from the phase images (see bSource).
func conv2DFast(p Conv2DParams, n, h, w int, x []float32, weight Mat, bias, y []float32, o ConvOptions) {
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	dh, dw := max(p.DilH, 1), max(p.DilW, 1)
	oh, ow := p.OutSize(h, w)
	if oh <= 0 || ow <= 0 || p.OutC == 0 {
		return
	}
	kk := p.InC * p.KH * p.KW
	A := matA(weight, kk)
	inPlane, outPlane := p.InC*h*w, p.OutC*oh*ow
	if p.KH == 1 && p.KW == 1 && sh == 1 && sw == 1 && p.PadT|p.PadB|p.PadL|p.PadR == 0 && o.Pre == nil {
		ar := pickArchMN(p.OutC, h*w)
		for b := 0; b < n; b++ {
			xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
			gemmRun(ar, p.OutC, h*w, p.InC, A, matrixB(ar, xb, h*w, h*w, false, 1), yb, h*w, o.Accumulate, bias)
		}
		return
	}
	ar := pickConvArch(p.OutC, ow, oh*ow)
	nr := ar.nr
	hp, wp := h+p.PadT+p.PadB, w+p.PadL+p.PadR
	hps, wps := (hp+sh-1)/sh, (wp+sw-1)/sw // phase image size
	band, bhps := ConvBand(p, oh, ow, hps, wps, 4)
	plane := bhps * wps
	// Tap offsets in the phase images, one per row of im2col.
	offs := make([]int, kk)
	for c := 0; c < p.InC; c++ {
		for u := 0; u < p.KH; u++ {
			for v := 0; v < p.KW; v++ {
				ph := (c*sh+(u*dh)%sh)*sw + (v*dw)%sw
				offs[(c*p.KH+u)*p.KW+v] = ph*plane + (u*dh)/sh*wps + (v*dw)/sw
			}
		}
	}
	if ow%nr != 0 && convVirtualWidth && gemmDirectB && ar.ki != nil {
		if rows := min(band, oh); (rows*wps+nr-1)/nr*nr*100 <= rows*ow*convVirtualMaxPct {
			convVirtual(p, ar, n, h, w, oh, ow, wps, band, bhps, offs, x, A, bias, y, o)
			return
		}
	}
	xpp := getScratch(p.InC * sh * sw * plane)
	defer putScratch(xpp)
	xp := *xpp
	var nq int // output pixels of the current band
	packB := func(dst []float32, pc, kc, j0, nc int) {
		for jp := 0; jp*nr < nc; jp++ {
			q := j0 + jp*nr
			d := dst[jp*kc*nr : (jp+1)*kc*nr]
			i, j := q/ow, q%ow
			if j+nr <= ow {
				ar.pack(&d[0], &xp[i*wps+j], &offs[pc], kc)
				continue
			}
			// The panel straddles output rows (or ends past the last pixel).
			for t := 0; t < nr; {
				qq := q + t
				if qq >= nq {
					for k := 0; k < kc; k++ {
						clear(d[k*nr+t : k*nr+nr])
					}
					break
				}
				i, j := qq/ow, qq%ow
				seg := min(nr-t, ow-j)
				src := i*wps + j
				for k, o := range offs[pc : pc+kc] {
					copy(d[k*nr+t:k*nr+t+seg], xp[src+o:src+o+seg])
				}
				t += seg
			}
		}
	}
	B := bSource{pack: packB}
	if ow%nr == 0 {
		// Every panel lies in one output row: the indirect micro-kernel
		// reads it from the phase images in place (no packing).
		B.direct = func(q int) *float32 { return &xp[q/ow*wps+q%ow] }
		B.offs = offs
	}
	for b := 0; b < n; b++ {
		xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
		pre := o.Pre.Sample(b, p.InC)
		for r0 := 0; r0 < oh; r0 += band {
			rows := min(band, oh-r0)
			nq = rows * ow
			// Phase rows of this band: padded rows sh*(r0+r)+a, r < bhps.
			PhaseImages(xb, xp, p.InC, h, w, p.PadT-sh*r0, p.PadL, sh, sw, bhps, wps, pre, copyRun, same)
			gemmRunB(ar, p.OutC, nq, kk, A, B, yb[r0*ow:], oh*ow, o.Accumulate, bias)
		}
	}
}

// convVirtualWidth lets a convolution whose output width no tile width
// divides run on the indirect micro-kernels anyway (see convVirtual), when
// that computes at most convVirtualMaxPct percent of the output pixels; off,
// such convolutions pack their B panels (A/B measurements and tests).
var (
	convVirtualWidth  = true
	convVirtualMaxPct = 115
)

// convVirtual is conv2DFast's band loop over "virtual" output pixels: pixel
// q = i·wps + j of a band for every column j of the phase images (wps of
// them), not only the ow columns of the output. Tap p of every virtual pixel
// is then at phase image + q + offs[p], so a B panel of nr consecutive
// virtual pixels is read in place by the indirect micro-kernel whatever the
// output width (conv2DFast's direct path needs nr to divide ow: at some of
// the tiled VAE's widths, e.g. 150 and 300, no tile width does). The GEMM
// writes the virtual pixels of a band (in sub-bands: [OutC, rows·wps
// rounded up to nr]) into a scratch buffer
// whose valid columns are then copied into y (and, to add into y, copied
// from it first, so that the sums are formed exactly as on the other paths:
// the same bits). The columns j >= ow read past the row's image, into the
// next row or the buffer's slack: their values are dropped.
func convVirtual(p Conv2DParams, ar *gemmArch, n, h, w, oh, ow, wps, band, bhps int, offs []int, x []float32, A aSource, bias, y []float32, o ConvOptions) {
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	nr := ar.nr
	kk := p.InC * p.KH * p.KW
	inPlane, outPlane := p.InC*h*w, p.OutC*oh*ow
	plane := bhps * wps
	// The GEMM runs on sub-bands of sub rows, whose virtual pixels for all
	// OutC channels take about convVirtualBytes (never fewer than
	// convBandMinCols pixels).
	sub := min(band, max(convVirtualBytes/max(4*p.OutC*wps, 1), (convBandMinCols+wps-1)/wps, 1))
	nvMax := (sub*wps + nr - 1) / nr * nr
	// Slack past the phase images for the last panel's dropped columns.
	slack := nvMax + ((p.KH-1)*max(p.DilH, 1)/sh+1)*wps + (p.KW-1)*max(p.DilW, 1)/sw + nr
	xpp := getScratch(p.InC*sh*sw*plane + slack)
	defer putScratch(xpp)
	xp := *xpp
	cvp := getScratch(p.OutC * nvMax)
	defer putScratch(cvp)
	base := 0 // the sub-band's first virtual pixel in the phase images
	B := bSource{
		pack: func(dst []float32, pc, kc, j0, nc int) {
			for jp := 0; jp*nr < nc; jp++ {
				ar.pack(&dst[jp*kc*nr], &xp[base+j0+jp*nr], &offs[pc], kc)
			}
		},
		direct: func(q int) *float32 { return &xp[base+q] },
		offs:   offs,
	}
	for b := 0; b < n; b++ {
		xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
		pre := o.Pre.Sample(b, p.InC)
		for r0 := 0; r0 < oh; r0 += band {
			rows := min(band, oh-r0)
			PhaseImages(xb, xp, p.InC, h, w, p.PadT-sh*r0, p.PadL, sh, sw, bhps, wps, pre, copyRun, same)
			for s0 := 0; s0 < rows; s0 += sub {
				sr := min(sub, rows-s0)
				nv := (sr*wps + nr - 1) / nr * nr
				cv := (*cvp)[:p.OutC*nv]
				base = s0 * wps
				// move copies the sub-band's valid pixels between y and cv.
				move := func(toY bool) {
					parallel.For(p.OutC, 4, func(lo, hi int) {
						for c := lo; c < hi; c++ {
							for r := 0; r < sr; r++ {
								yr := yb[c*oh*ow+(r0+s0+r)*ow:][:ow]
								vr := cv[c*nv+r*wps:][:ow]
								if toY {
									copy(yr, vr)
								} else {
									copy(vr, yr)
								}
							}
						}
					})
				}
				if o.Accumulate {
					move(false)
				}
				gemmRunB(ar, p.OutC, nv, kk, A, B, cv, nv, o.Accumulate, bias)
				move(true)
			}
		}
	}
}

// convVirtualBytes bounds convVirtual's buffer of virtual output pixels.
var convVirtualBytes = 8 << 20

// convBandBytes bounds the phase images a convolution materialises at once:
// the output is computed in bands of rows whose input (with its halo) fits,
// so the copy stays in the cache and costs no tensor-sized buffer.
var (
	convBandBytes   = 6 << 20
	convBandMinCols = 2048
)

// SetConvBand sets the band budget of the convolutions (bytes of phase
// images, and the fewest output pixels a band may have) and returns the
// previous values; for tests and tuning, while no convolution runs.
func SetConvBand(bytes, minCols int) (prevBytes, prevMinCols int) {
	prevBytes, prevMinCols = convBandBytes, convBandMinCols
	convBandBytes, convBandMinCols = bytes, minCols
	return
}

// ConvBand returns the output rows per band of a convolution with output
// oh×ow and phase images hps×wps (elemBytes per packed value), and the phase
// rows a band needs. A band is never narrower than 2048 output pixels (or
// the whole output), so that the GEMM of each band stays efficient; within
// those bounds the bands are of nearly equal height.
func ConvBand(p Conv2DParams, oh, ow, hps, wps, elemBytes int) (band, bandPhaseRows int) {
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	halo := ((p.KH - 1) * max(p.DilH, 1)) / sh
	rowBytes := p.InC * sh * sw * wps * elemBytes
	band = max(convBandBytes/max(rowBytes, 1)-halo, (convBandMinCols+ow-1)/ow, 1)
	if band >= oh {
		return oh, hps
	}
	// As many bands as the budget needs, of nearly equal height: a short last band
	// (64 rows as 42 + 22 for 512 channels at 64×64) is a parallel region
	// with too few panels to keep both workers busy (balanced: 512→512 at
	// 64² 3–6% faster on average, interleaved A/B; the others unchanged).
	nb := (oh + band - 1) / band
	if eq := (oh + nb - 1) / nb; eq*ow >= convBandMinCols {
		band = eq
	}
	return band, min(band+halo, hps)
}

// pickConvArch prefers, among the tiles of the current level, one whose
// width divides the output width ow (no B panel straddles output rows), and
// within those the one that wastes the fewest rows for m; when none does,
// the one that pads the m×n product the least (n output pixels). Padding
// rows alone chose 8×48 for the UNet's 1280 channels at 8×8, where the 64
// pixels fill one and a third 48-wide tiles: 1280→1280 ran at 44–49% of
// peak, 63–66% on 32-wide tiles (interleaved in a test harness).
func pickConvArch(m, ow, n int) *gemmArch {
	var best *gemmArch
	bw := 0
	for _, a := range gemmArchs[CurrentISA()] {
		if ow%a.nr != 0 {
			continue
		}
		if w := (m+a.mr-1)/a.mr*a.mr - m; best == nil || w*best.mr < bw*a.mr {
			best, bw = a, w
		}
	}
	if best == nil {
		return pickArchMN(m, n)
	}
	return best
}

// PhaseImages writes the sh×sw phase images of the zero-padded x [c, h, w]
// (padding padT above, padL left, zero past the bottom and right edges) into
// xp [c][sh][sw][hps][wps]: phase (a,b) pixel (r,s) is padded pixel
// (sh*r+a, sw*s+b), i.e. x(sh*r+a-padT, sw*s+b-padL) or 0 outside x. A
// negative padT starts the images -padT rows into x (a band of rows). pre,
// when not nil, transforms each channel of x first (the padding stays zero).
// The element type of xp is the packing's: run converts a contiguous run of
// x (stride 1) and one converts a single value (other strides); float32 uses
// copy and the identity, the bf16 kernels their rounding.
func PhaseImages[T any](x []float32, xp []T, c, h, w, padT, padL, sh, sw, hps, wps int, pre *ChannelAffine, run func(dst []T, src []float32), one func(float32) T) {
	plane := hps * wps
	parallel.Dynamic(c*sh, 2, func(lo, hi int) {
		var tmp []float32
		if pre != nil {
			tmp = make([]float32, w)
		}
		for ca := lo; ca < hi; ca++ {
			ch, a := ca/sh, ca%sh
			for b := 0; b < sw; b++ {
				d := xp[((ch*sh+a)*sw+b)*plane : ((ch*sh+a)*sw+b+1)*plane]
				// Columns s of the phase that fall inside x: sw*s+b-padL in [0, w).
				s0 := max(0, (padL-b+sw-1)/sw)
				s1 := min(wps, (w+padL-b+sw-1)/sw)
				for r := 0; r < hps; r++ {
					row := d[r*wps : (r+1)*wps]
					i := sh*r + a - padT
					if i < 0 || i >= h || s0 >= s1 {
						clear(row)
						continue
					}
					clear(row[:s0])
					clear(row[s1:])
					src := x[(ch*h+i)*w : (ch*h+i+1)*w]
					if pre != nil {
						if sw == 1 {
							seg := src[s0+b-padL : s1+b-padL]
							if f, ok := any(row).([]float32); ok {
								pre.apply(f[s0:s1], seg, ch)
								continue
							}
							pre.apply(tmp[:len(seg)], seg, ch)
							run(row[s0:s1], tmp[:len(seg)])
							continue
						}
						pre.apply(tmp, src, ch)
						src = tmp
					}
					if sw == 1 {
						run(row[s0:s1], src[s0+b-padL:])
						continue
					}
					if f, ok := any(row).([]float32); ok {
						gatherStride(f[s0:s1], src[sw*s0+b-padL:], sw)
						continue
					}
					for s, k := s0, sw*s0+b-padL; s < s1; s, k = s+1, k+sw {
						row[s] = one(src[k])
					}
				}
			}
		}
	})
}

func copyRun(dst, src []float32) { copy(dst, src) }
func same(v float32) float32     { return v }

// gatherStride sets dst[i] = src[i*stride].
func gatherStride(dst, src []float32, stride int) {
	if len(dst) == 0 {
		return
	}
	src = src[:(len(dst)-1)*stride+1]
	if stride == 2 {
		i := 0
		if v := fast(); v != nil && v.even != nil {
			// Whole vectors that stay inside src (they read 2·n values).
			i = (len(dst) - 1) / 16 * 16
			if i > 0 {
				v.even(&dst[0], &src[0], i)
			}
		}
		for ; i < len(dst); i++ {
			dst[i] = src[2*i]
		}
		return
	}
	for i, k := 0, 0; i < len(dst); i, k = i+1, k+stride {
		dst[i] = src[k]
	}
}
