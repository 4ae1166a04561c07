package bf16

import (
	"fmt"
	"sync"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/parallel"
)

var intPool sync.Pool

func getInts(n int) *[]int {
	if p, ok := intPool.Get().(*[]int); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]int, n)
	return &s
}

// PackConv converts convolution weights [OutC, InC, KH, KW] into a
// LeftMatrix for Conv2D.
func PackConv(p kernels.Conv2DParams, weight []float32) *LeftMatrix {
	k := p.InC * p.KH * p.KW
	if len(weight) != p.OutC*k {
		panic(fmt.Sprintf("bf16.PackConv: %d weights for %d×%d×%d×%d", len(weight), p.OutC, p.InC, p.KH, p.KW))
	}
	return PackLeft(p.OutC, k, weight, k)
}

// Conv2D computes y = conv(x, W) + bias as kernels.Conv2D does, with W the
// weights packed by PackConv (bf16), x rounded to bf16 and float32
// accumulation: x [n, InC, h, w], bias [OutC] or nil, y [n, OutC, oh, ow]
// (overwritten).
//
// The input is copied once, zero-padded and rounded to bf16, into sh×sw
// phase images (phase (a,b) holds padded pixels (sh*r+a, sw*s+b)), so that
// every kernel tap reads a phase image with unit stride; the panels of the
// implicit im2col are then packed straight from them, two taps (a k-pair) at
// a time.
func (l *LeftMatrix) Conv2D(p kernels.Conv2DParams, n, h, w int, x, bias, y []float32) {
	l.Conv2DEx(p, n, h, w, x, bias, y, kernels.ConvOptions{})
}

// Conv2DEx is Conv2D with kernels.Conv2DEx's fusions: the input transform
// (applied in float32, then rounded to bf16) and the accumulating store.
// The output is computed in bands of rows (kernels.ConvBand).
func (l *LeftMatrix) Conv2DEx(p kernels.Conv2DParams, n, h, w int, x, bias, y []float32, o kernels.ConvOptions) {
	kk := p.InC * p.KH * p.KW
	if l.m != p.OutC || l.k != kk {
		panic(fmt.Sprintf("bf16.Conv2D: weights %d×%d, params want %d×%d", l.m, l.k, p.OutC, kk))
	}
	if l.packed == nil {
		tp := getF32(n * p.InC * h * w)
		defer poolF32.Put(tp)
		tx := *tp
		if o.Pre != nil {
			o.Pre.Apply(x, tx, n*p.InC, h*w)
			x = tx
		}
		parallel.For(len(tx), 1<<14, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				tx[i] = RoundToFloat32(x[i])
			}
		})
		kernels.Conv2DEx(p, n, h, w, tx, kernels.F32(l.ref), bias, y, kernels.ConvOptions{Accumulate: o.Accumulate})
		return
	}
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	dh, dw := max(p.DilH, 1), max(p.DilW, 1)
	oh, ow := p.OutSize(h, w)
	if oh <= 0 || ow <= 0 || p.OutC == 0 {
		return
	}
	t := l.t
	nr := t.nr
	hp, wp := h+p.PadT+p.PadB, w+p.PadL+p.PadR
	hps, wps := (hp+sh-1)/sh, (wp+sw-1)/sw
	band, bhps := kernels.ConvBand(p, oh, ow, hps, wps, 2)
	plane := bhps * wps
	nplanes := p.InC * sh * sw
	kp := (kk + 1) / 2
	// Tap offsets in the phase images, one per row of im2col; the partner
	// of an odd last tap reads the zero plane after the phase images.
	op := getInts(2 * kp)
	defer intPool.Put(op)
	offs := *op
	for c := 0; c < p.InC; c++ {
		for u := 0; u < p.KH; u++ {
			for v := 0; v < p.KW; v++ {
				ph := (c*sh+(u*dh)%sh)*sw + (v*dw)%sw
				offs[(c*p.KH+u)*p.KW+v] = ph*plane + (u*dh)/sh*wps + (v*dw)/sw
			}
		}
	}
	size := nplanes * plane
	if kk%2 == 1 {
		offs[kk] = size
		size += plane
	}
	xpp := getU16(size + 64)
	defer poolU16.Put(xpp)
	xp := *xpp
	clear(xp[nplanes*plane:])
	var nq int // output pixels of the current band
	pack := packPairs[nr]
	B := func(buf []uint32, pc, kcb, j0, nc int) []uint32 {
		for jp := 0; jp*nr < nc; jp++ {
			q := j0 + jp*nr
			d := buf[jp*kcb*nr : (jp+1)*kcb*nr]
			i, j := q/ow, q%ow
			if j+nr <= ow {
				pack(&d[0], &xp[i*wps+j], &offs[2*pc], kcb)
				continue
			}
			// The panel straddles output rows (or ends past the last pixel).
			o := offs[2*pc : 2*(pc+kcb)]
			for t := 0; t < nr; {
				qq := q + t
				if qq >= nq {
					for p := 0; p < kcb; p++ {
						clear(d[p*nr+t : p*nr+nr])
					}
					break
				}
				i, j := qq/ow, qq%ow
				seg := min(nr-t, ow-j)
				src := i*wps + j
				for p := 0; p < kcb; p++ {
					s0 := xp[src+o[2*p] : src+o[2*p]+seg]
					s1 := xp[src+o[2*p+1] : src+o[2*p+1]+seg]
					dd := d[p*nr+t : p*nr+t+seg]
					for s := range dd {
						dd[s] = uint32(s0[s]) | uint32(s1[s])<<16
					}
				}
				t += seg
			}
		}
		return buf
	}
	inPlane, outPlane := p.InC*h*w, p.OutC*oh*ow
	for b := 0; b < n; b++ {
		xb, yb := x[b*inPlane:(b+1)*inPlane], y[b*outPlane:(b+1)*outPlane]
		pre := o.Pre.Sample(b, p.InC)
		for r0 := 0; r0 < oh; r0 += band {
			rows := min(band, oh-r0)
			nq = rows * ow
			kernels.PhaseImages(xb, xp, p.InC, h, w, p.PadT-sh*r0, p.PadL, sh, sw, bhps, wps, pre, convert, Round)
			runAcc(t, p.OutC, nq, kp, aOperand{packed: l.packed}, B, yb[r0*ow:], oh*ow, bias, nil, o.Accumulate)
		}
	}
}
