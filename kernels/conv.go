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
func conv2DFast(p Conv2DParams, n, h, w int, x, weight, bias, y []float32) {
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
		ar := pickArch(p.OutC)
		for b := 0; b < n; b++ {
			xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
			gemmRun(ar, p.OutC, h*w, p.InC, A, matrixB(ar, xb, h*w, h*w, false, 1), yb, h*w, false, bias)
		}
		return
	}
	ar := pickConvArch(p.OutC, ow)
	nr := ar.nr
	hp, wp := h+p.PadT+p.PadB, w+p.PadL+p.PadR
	hps, wps := (hp+sh-1)/sh, (wp+sw-1)/sw // phase image size
	plane := hps * wps
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
	xpp := getScratch(p.InC * sh * sw * plane)
	defer putScratch(xpp)
	xp := *xpp
	nq := oh * ow
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
	for b := 0; b < n; b++ {
		xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
		PhaseImages(xb, xp, p.InC, h, w, p.PadT, p.PadL, sh, sw, hps, wps, copyRun, same)
		gemmRun(ar, p.OutC, nq, kk, A, packB, yb, nq, false, bias)
	}
}

// pickConvArch prefers, among the tiles of the current level, one whose
// width divides the output width (no B panel straddles output rows), and
// within those the one that wastes the fewest rows for m.
func pickConvArch(m, ow int) *gemmArch {
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
		return pickArch(m)
	}
	return best
}

// PhaseImages writes the sh×sw phase images of the zero-padded x [c, h, w]
// (padding padT above, padL left, zero past the bottom and right edges) into
// xp [c][sh][sw][hps][wps]: phase (a,b) pixel (r,s) is padded pixel
// (sh*r+a, sw*s+b), i.e. x(sh*r+a-padT, sw*s+b-padL) or 0 outside x. The
// element type of xp is the packing's: run converts a contiguous run of x
// (stride 1) and one converts a single value (other strides); float32 uses
// copy and the identity, the bf16 kernels their rounding.
func PhaseImages[T any](x []float32, xp []T, c, h, w, padT, padL, sh, sw, hps, wps int, run func(dst []T, src []float32), one func(float32) T) {
	plane := hps * wps
	parallel.For(c*sh, 2, func(lo, hi int) {
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
					if sw == 1 {
						run(row[s0:s1], src[s0+b-padL:])
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
