package kernels

import "github.com/osediff-go/osediff/parallel"

// conv2DFast runs the convolution as a GEMM per image: A = weight
// [OutC, InC*KH*KW] read in place, B = the implicit im2col of the image,
// packed panel by panel straight from a zero-padded copy of the image.
//
// With unit horizontal stride the columns are taken in "padded-row space":
// column q = i*Wp + j (Wp the padded width, j < Wp) reads the padded image at
// q + off(c,u,v) for every kernel tap, so each packed row is one contiguous
// copy (packRows); the Wp-OW junk columns per row are dropped when the result
// is copied out (with the bias added on the way).
func conv2DFast(ar *gemmArch, p Conv2DParams, n, h, w int, x, weight, bias, y []float32) {
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	dh, dw := max(p.DilH, 1), max(p.DilW, 1)
	oh, ow := p.OutSize(h, w)
	if oh <= 0 || ow <= 0 || p.OutC == 0 {
		return
	}
	kk := p.InC * p.KH * p.KW
	A := aSource{a: weight, lda: kk}
	inPlane, outPlane := p.InC*h*w, p.OutC*oh*ow
	if p.KH == 1 && p.KW == 1 && sh == 1 && sw == 1 && p.PadT|p.PadB|p.PadL|p.PadR == 0 {
		for b := 0; b < n; b++ {
			xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
			gemmRun(ar, p.OutC, h*w, p.InC, A, matrixB(ar, xb, h*w, h*w, false, 1), yb, h*w, false)
			if bias != nil {
				AddChannelVector(yb, 1, p.OutC, h*w, bias)
			}
		}
		return
	}
	hp, wp := h+p.PadT+p.PadB, w+p.PadL+p.PadR
	plane := hp * wp
	nr := ar.nr
	// Tap offsets in the padded image, one per row of im2col.
	offs := make([]int, kk)
	for c := 0; c < p.InC; c++ {
		for u := 0; u < p.KH; u++ {
			for v := 0; v < p.KW; v++ {
				offs[(c*p.KH+u)*p.KW+v] = c*plane + u*dh*wp + v*dw
			}
		}
	}
	nq := oh * wp // columns in padded-row space (unit stride)
	if sw != 1 {
		nq = oh * ow
	}
	slack := 2*nr + p.KW*dw + wp + sh*wp
	xpp := getScratch(p.InC*plane + slack)
	defer putScratch(xpp)
	xp := *xpp
	var ypp *[]float32
	if sw == 1 {
		ypp = getScratch(p.OutC * nq)
		defer putScratch(ypp)
	}
	// Column offsets for strided convolutions (q -> padded pixel).
	var colOff []int
	if sw != 1 {
		colOff = make([]int, (nq+nr-1)/nr*nr)
		for q := 0; q < nq; q++ {
			colOff[q] = (q/ow)*sh*wp + (q%ow)*sw
		}
	}
	for b := 0; b < n; b++ {
		xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
		padImage(xb, xp, p.InC, h, w, p.PadT, p.PadL, hp, wp)
		if sw == 1 {
			// Vertical stride: padded row of output row i is i*sh.
			packB := func(dst []float32, pc, kc, j0, nc int) {
				for jp := 0; jp*nr < nc; jp++ {
					q := j0 + jp*nr
					src := (q/wp)*sh*wp + q%wp
					ar.pack(&dst[jp*kc*nr], &xp[src], &offs[pc], kc)
				}
			}
			if sh != 1 {
				// A panel may straddle output rows: gather column by column.
				packB = func(dst []float32, pc, kc, j0, nc int) {
					for jp := 0; jp*nr < nc; jp++ {
						d := dst[jp*kc*nr : (jp+1)*kc*nr]
						for t := 0; t < nr; t++ {
							q := j0 + jp*nr + t
							src := (q/wp)*sh*wp + q%wp
							for k, o := range offs[pc : pc+kc] {
								d[k*nr+t] = xp[src+o]
							}
						}
					}
				}
			}
			yp := *ypp
			gemmRun(ar, p.OutC, nq, kk, A, packB, yp, nq, false)
			parallel.For(p.OutC, 1, func(lo, hi int) {
				for o := lo; o < hi; o++ {
					var bv float32
					if bias != nil {
						bv = bias[o]
					}
					for i := 0; i < oh; i++ {
						addScalar(yb[(o*oh+i)*ow:(o*oh+i+1)*ow], yp[o*nq+i*wp:o*nq+i*wp+ow], bv)
					}
				}
			})
			continue
		}
		packB := func(dst []float32, pc, kc, j0, nc int) {
			for jp := 0; jp*nr < nc; jp++ {
				d := dst[jp*kc*nr : (jp+1)*kc*nr]
				cols := colOff[j0+jp*nr : j0+jp*nr+nr]
				for k, o := range offs[pc : pc+kc] {
					row := d[k*nr : k*nr+nr]
					src := xp[o:]
					for t, co := range cols {
						row[t] = src[co]
					}
				}
			}
		}
		gemmRun(ar, p.OutC, nq, kk, A, packB, yb, nq, false)
		if bias != nil {
			AddChannelVector(yb, 1, p.OutC, oh*ow, bias)
		}
	}
}

// padImage copies x [c, h, w] into xp [c, hp, wp] at (padT, padL), zeroing
// the border and the slack after the last plane.
func padImage(x, xp []float32, c, h, w, padT, padL, hp, wp int) {
	plane := hp * wp
	parallel.For(c, 4, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			d := xp[ch*plane : (ch+1)*plane]
			clear(d[:padT*wp])
			for i := 0; i < h; i++ {
				row := d[(padT+i)*wp : (padT+i+1)*wp]
				clear(row[:padL])
				copy(row[padL:], x[(ch*h+i)*w:(ch*h+i+1)*w])
				clear(row[padL+w:])
			}
			clear(d[(padT+h)*wp:])
		}
	})
	clear(xp[c*plane:])
}
