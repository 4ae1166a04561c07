package kernels

import (
	"math"

	"github.com/osediff-go/osediff/parallel"
)

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices, with
// op(X) = X or Xᵀ. op(A) is m×k, op(B) is k×n, C is m×n; lda, ldb, ldc are
// row strides. beta == 0 means C is not read (NaNs in C are ignored).
//
//	for i < m, j < n: c[i*ldc+j] = alpha*sum_p A(i,p)*B(p,j) + beta*c[i*ldc+j]
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	SgemmMat(transA, transB, m, n, k, alpha, F32(a), lda, F32(b), ldb, beta, c, ldc)
}

// SgemmMat is Sgemm with A and B given as Mats (float32 or float16): a
// float16 operand is widened panel by panel as it is packed, exactly as if
// its float32 values had been given.
func SgemmMat(transA, transB bool, m, n, k int, alpha float32, a Mat, lda int, b Mat, ldb int, beta float32, c []float32, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if ar := pickArchA(m, n, k, lda, transA, a.Half()); ar != nil {
		sgemmFast(ar, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	sgemmRef(transA, transB, m, n, k, alpha, a.Float32(), lda, b.Float32(), ldb, beta, c, ldc)
}

// SgemmBatch runs batch independent Sgemm calls; matrix i of A, B and C starts
// at i*strideA, i*strideB, i*strideC.
func SgemmBatch(batch int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int) {
	one := func(i int) {
		Sgemm(transA, transB, m, n, k, alpha, a[i*strideA:], lda, b[i*strideB:], ldb, beta, c[i*strideC:], ldc)
	}
	if batch >= parallel.Threads() && m*n*max(k, 1) < 1<<22 {
		// Many small products: one per worker (the nested Sgemm runs serially).
		parallel.For(batch, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				one(i)
			}
		})
		return
	}
	for i := 0; i < batch; i++ {
		one(i)
	}
}

func sgemmRef(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * s
			} else {
				c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
			}
		}
	}
}

// Conv2DParams describes a 2-D convolution (groups = 1) as PyTorch's Conv2d
// with an explicit, possibly asymmetric zero padding.
type Conv2DParams struct {
	InC, OutC  int
	KH, KW     int
	StrideH    int
	StrideW    int
	PadT, PadB int
	PadL, PadR int
	DilH, DilW int // 0 means 1
}

// OutSize returns the output height and width for an h×w input.
func (p Conv2DParams) OutSize(h, w int) (int, int) {
	dh, dw := max(p.DilH, 1), max(p.DilW, 1)
	oh := (h+p.PadT+p.PadB-dh*(p.KH-1)-1)/max(p.StrideH, 1) + 1
	ow := (w+p.PadL+p.PadR-dw*(p.KW-1)-1)/max(p.StrideW, 1) + 1
	return oh, ow
}

// Conv2D computes y = conv(x, weight) + bias for x [n, InC, h, w], weight
// [OutC, InC, KH, KW], bias [OutC] or nil, y [n, OutC, oh, ow] (overwritten).
func Conv2D(p Conv2DParams, n, h, w int, x, weight, bias, y []float32) {
	Conv2DMat(p, n, h, w, x, F32(weight), bias, y)
}

// Conv2DMat is Conv2D with the weights given as a Mat (float32 or float16,
// [OutC, InC·KH·KW] row-major); float16 weights are widened panel by panel.
func Conv2DMat(p Conv2DParams, n, h, w int, x []float32, weight Mat, bias, y []float32) {
	Conv2DEx(p, n, h, w, x, weight, bias, y, ConvOptions{})
}

// ConvOptions are the fusions of Conv2DEx.
type ConvOptions struct {
	// Pre transforms the input as the convolution reads it (nil: none).
	Pre *ChannelAffine
	// Accumulate adds the convolution to y instead of overwriting it (y
	// holds, e.g., the residual of a ResNet block).
	Accumulate bool
}

// ChannelAffine is a per-channel transform of a convolution's input:
// x' = x·Scale[i] + Shift[i] on channel plane i = b·InC + c, then SiLU when
// SiLU is set. With GroupNormAffine's scales it is GroupNorm (+SiLU) fused
// into the convolution, bit for bit: the zero padding is applied after it,
// as when the normalised tensor is padded.
type ChannelAffine struct {
	Scale, Shift []float32
	SiLU         bool
}

// Sample returns the transform of sample b (c channels per sample), or nil
// for a nil t.
func (t *ChannelAffine) Sample(b, c int) *ChannelAffine {
	if t == nil {
		return nil
	}
	return &ChannelAffine{Scale: t.Scale[b*c : (b+1)*c], Shift: t.Shift[b*c : (b+1)*c], SiLU: t.SiLU}
}

// Apply writes the transform of x (planes channel planes of hw values,
// plane i transformed by Scale[i], Shift[i]) into y (may be x).
func (t *ChannelAffine) Apply(x, y []float32, planes, hw int) {
	parallel.For(planes, 1, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			t.apply(y[pl*hw:(pl+1)*hw], x[pl*hw:(pl+1)*hw], pl)
		}
	})
}

// apply writes the transform of channel ch of src into dst (same length),
// with GroupNorm's arithmetic.
func (t *ChannelAffine) apply(dst, src []float32, ch int) {
	if v := fast(); v != nil {
		affine(v, src, dst, t.Scale[ch], t.Shift[ch], t.SiLU, false)
		return
	}
	sc, sh := t.Scale[ch], t.Shift[ch]
	for i, x := range src {
		v := x*sc + sh
		if t.SiLU {
			v = v / (1 + float32(math.Exp(float64(-v))))
		}
		dst[i] = v
	}
}

// Conv2DEx is Conv2DMat with fusions (see ConvOptions): y = conv(pre(x)) +
// bias (+ y when accumulating).
func Conv2DEx(p Conv2DParams, n, h, w int, x []float32, weight Mat, bias, y []float32, o ConvOptions) {
	if pickArch(p.OutC) != nil {
		conv2DFast(p, n, h, w, x, weight, bias, y, o)
		return
	}
	oh, ow := p.OutSize(h, w)
	if o.Pre != nil {
		xt := make([]float32, len(x))
		o.Pre.Apply(x, xt, n*p.InC, h*w)
		x = xt
	}
	if o.Accumulate {
		t := make([]float32, n*p.OutC*oh*ow)
		conv2DRef(p, n, h, w, x, weight.Float32(), bias, t)
		for i, v := range t {
			y[i] += v
		}
		return
	}
	conv2DRef(p, n, h, w, x, weight.Float32(), bias, y)
}

// GroupNormAffine returns the per-(sample, channel) scale and shift that
// GroupNorm (x [n, c, hw], groups, eps, gamma/beta or nil) applies:
// GroupNorm(x)[b,ch] = x[b,ch]·scale[b·c+ch] + shift[b·c+ch], computed as
// GroupNorm computes them. With a ChannelAffine of these it fuses GroupNorm
// into a convolution.
func GroupNormAffine(x []float32, n, c, hw, groups int, eps float32, gamma, beta []float32) (scale, shift []float32) {
	scale, shift = make([]float32, n*c), make([]float32, n*c)
	cpg := c / groups
	v := fast()
	parallel.Dynamic(n*groups, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			b, g := ng/groups, ng%groups
			base := (b*c + g*cpg) * hw
			cnt := cpg * hw
			if cnt == 0 {
				continue
			}
			var mean, inv float32
			if v != nil {
				mean, inv = stats(v, x[base:base+cnt], eps)
			} else {
				mean, inv = statsRef(x[base:base+cnt], eps)
			}
			for ci := 0; ci < cpg; ci++ {
				ch := g*cpg + ci
				scale[b*c+ch], shift[b*c+ch] = normScaleShift(gamma, beta, ch, mean, inv)
			}
		}
	})
	return scale, shift
}

// statsRef is groupNormRef's mean and 1/sqrt(var+eps) of x.
func statsRef(x []float32, eps float32) (float32, float32) {
	mean, variance := MeanVar(x)
	return float32(mean), float32(1 / math.Sqrt(variance+float64(eps)))
}

// MeanVar returns the mean and the biased variance of x, in two passes in
// float64 (0, 0 for an empty x): the reference statistics of the norms.
func MeanVar(x []float32) (mean, variance float64) {
	if len(x) == 0 {
		return 0, 0
	}
	var sum float64
	for _, v := range x {
		sum += float64(v)
	}
	mean = sum / float64(len(x))
	var vs float64
	for _, v := range x {
		d := float64(v) - mean
		vs += d * d
	}
	return mean, vs / float64(len(x))
}

// Moments returns the mean and the biased variance of x, as MeanVar does,
// with the vector loops: a float64 sum, then Σ(x−m) and Σ(x−m)² in float64
// around m = float32(mean), which also corrects for the rounding of m. As
// accurate as MeanVar's two passes (the summation order differs, so the last
// bits of the float64 results may too) and memory-bound where MeanVar's
// scalar loops are not (128 MiB: 9.5 ms against 21 ms on one thread here):
// the tiled VAE's shared GroupNorm statistics read every tile with it.
func Moments(x []float32) (mean, variance float64) {
	v := fast()
	n := len(x)
	if v == nil || n < v.w {
		return MeanVar(x)
	}
	s, _ := shiftedSums(v, x, 0)
	m := float32(s / float64(n))
	d, dd := shiftedSums(v, x, m)
	d /= float64(n)
	return float64(m) + d, max(dd/float64(n)-d*d, 0)
}

// normScaleShift is the per-channel transform y = x·scale + shift of a
// GroupNorm with the statistics mean and inv = 1/sqrt(var+eps) of the
// channel's group and the affine weights gamma, beta (nil: 1 and 0).
func normScaleShift(gamma, beta []float32, ch int, mean, inv float32) (scale, shift float32) {
	ga, be := float32(1), float32(0)
	if gamma != nil {
		ga = gamma[ch]
	}
	if beta != nil {
		be = beta[ch]
	}
	scale = inv * ga
	return scale, be - mean*scale
}

func conv2DRef(p Conv2DParams, n, h, w int, x, weight, bias, y []float32) {
	sh, sw := max(p.StrideH, 1), max(p.StrideW, 1)
	dh, dw := max(p.DilH, 1), max(p.DilW, 1)
	oh, ow := p.OutSize(h, w)
	for b := 0; b < n; b++ {
		for o := 0; o < p.OutC; o++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					var s float32
					if bias != nil {
						s = bias[o]
					}
					for c := 0; c < p.InC; c++ {
						for u := 0; u < p.KH; u++ {
							yy := i*sh - p.PadT + u*dh
							if yy < 0 || yy >= h {
								continue
							}
							for v := 0; v < p.KW; v++ {
								xx := j*sw - p.PadL + v*dw
								if xx < 0 || xx >= w {
									continue
								}
								s += x[((b*p.InC+c)*h+yy)*w+xx] * weight[((o*p.InC+c)*p.KH+u)*p.KW+v]
							}
						}
					}
					y[((b*p.OutC+o)*oh+i)*ow+j] = s
				}
			}
		}
	}
}

// GroupNorm normalises x [n, c, hw] per (sample, group of c/groups channels)
// with biased variance, then y = xhat*gamma[ch] + beta[ch], then SiLU when
// silu is set. gamma/beta may be nil (1 and 0). y may alias x.
func GroupNorm(x, y []float32, n, c, hw, groups int, eps float32, gamma, beta []float32, silu bool) {
	if v := fast(); v != nil {
		groupNormFast(v, x, y, n, c, hw, groups, eps, gamma, beta, silu)
		return
	}
	groupNormRef(x, y, n, c, hw, groups, eps, gamma, beta, silu)
}

func groupNormRef(x, y []float32, n, c, hw, groups int, eps float32, gamma, beta []float32, silu bool) {
	cpg := c / groups
	for b := 0; b < n; b++ {
		for g := 0; g < groups; g++ {
			base := (b*c + g*cpg) * hw
			cnt := cpg * hw
			if cnt == 0 {
				continue
			}
			mean, inv := statsRef(x[base:base+cnt], eps)
			for ci := 0; ci < cpg; ci++ {
				sc, sh := normScaleShift(gamma, beta, g*cpg+ci, mean, inv)
				off := base + ci*hw
				for i := 0; i < hw; i++ {
					v := x[off+i]*sc + sh
					if silu {
						v = v / (1 + float32(math.Exp(float64(-v))))
					}
					y[off+i] = v
				}
			}
		}
	}
}

// LayerNorm normalises each of rows rows of cols values (biased variance):
// y = (x-mean)/sqrt(var+eps)*gamma + beta. gamma/beta may be nil. y may alias x.
func LayerNorm(x, y []float32, rows, cols int, eps float32, gamma, beta []float32) {
	if v := fast(); v != nil {
		layerNormFast(v, x, y, rows, cols, eps, gamma, beta)
		return
	}
	layerNormRef(x, y, rows, cols, eps, gamma, beta)
}

func layerNormRef(x, y []float32, rows, cols int, eps float32, gamma, beta []float32) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := sum / float64(cols)
		var vs float64
		for _, v := range row {
			d := float64(v) - mean
			vs += d * d
		}
		inv := float32(1 / math.Sqrt(vs/float64(cols)+float64(eps)))
		m := float32(mean)
		out := y[r*cols : (r+1)*cols]
		for i, v := range row {
			o := (v - m) * inv
			if gamma != nil {
				o *= gamma[i]
			}
			if beta != nil {
				o += beta[i]
			}
			out[i] = o
		}
	}
}

// Softmax replaces each of rows rows of cols values by its softmax (max-subtracted).
func Softmax(x []float32, rows, cols int) {
	if v := fast(); v != nil {
		softmaxFast(v, x, rows, cols)
		return
	}
	softmaxRef(x, rows, cols)
}

func softmaxRef(x []float32, rows, cols int) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		mx := float32(math.Inf(-1))
		for _, v := range row {
			mx = max(mx, v)
		}
		var s float32
		for i, v := range row {
			e := float32(math.Exp(float64(v - mx)))
			row[i] = e
			s += e
		}
		inv := 1 / s
		for i := range row {
			row[i] *= inv
		}
	}
}

// SiLU: y = x*sigmoid(x). y may alias x.
func SiLU(x, y []float32) {
	if v := fast(); v != nil {
		parallelUn(v, x, y[:len(x)], func(x, y *float32, n int) { v.sigMul(x, y, n, 1) })
		return
	}
	siluRef(x, y)
}

func siluRef(x, y []float32) {
	for i, v := range x {
		y[i] = v / (1 + float32(math.Exp(float64(-v))))
	}
}

// GELU is the exact (erf) GELU: y = x/2*(1+erf(x/√2)). y may alias x.
func GELU(x, y []float32) {
	if v := fast(); v != nil {
		parallelUn(v, x, y[:len(x)], v.gelu)
		return
	}
	geluRef(x, y)
}

func geluRef(x, y []float32) {
	for i, v := range x {
		y[i] = gelu(v)
	}
}

// QuickGELU: y = x*sigmoid(1.702x) (CLIP's quick_gelu).
func QuickGELU(x, y []float32) {
	if v := fast(); v != nil {
		parallelUn(v, x, y[:len(x)], func(x, y *float32, n int) { v.sigMul(x, y, n, 1.702) })
		return
	}
	quickGELURef(x, y)
}

func quickGELURef(x, y []float32) {
	for i, v := range x {
		y[i] = v / (1 + float32(math.Exp(float64(-1.702*v))))
	}
}

// gelu is x/2·(1+erf(x/√2)), evaluated as x/2·erfc(-x/√2) in float64 so
// that the tail x << 0 keeps its relative accuracy.
func gelu(v float32) float32 {
	return float32(0.5 * float64(v) * math.Erfc(-float64(v)/math.Sqrt2))
}

// GEGLU splits each row of x [rows, 2*cols] into value = x[:, :cols] and
// gate = x[:, cols:] and writes y [rows, cols] = value * GELU(gate).
func GEGLU(x, y []float32, rows, cols int) {
	if v := fast(); v != nil && cols > 0 {
		parallel.For(rows, max(1, eltGrain/cols), func(lo, hi int) {
			for r := lo; r < hi; r++ {
				in := x[r*2*cols : (r+1)*2*cols]
				bin(v, y[r*cols:(r+1)*cols], in[:cols], in[cols:], func(d, a, g *float32, n int) { v.geglu(a, g, d, n) })
			}
		})
		return
	}
	gegluRef(x, y, rows, cols)
}

func gegluRef(x, y []float32, rows, cols int) {
	for r := 0; r < rows; r++ {
		in := x[r*2*cols : (r+1)*2*cols]
		out := y[r*cols : (r+1)*cols]
		for i := 0; i < cols; i++ {
			out[i] = in[i] * gelu(in[cols+i])
		}
	}
}

// Add: dst[i] = a[i] + b[i]. dst may alias a or b.
func Add(dst, a, b []float32) {
	if v := fast(); v != nil {
		parallelBin(v, dst, a, b, v.addv)
		return
	}
	addRef(dst, a, b)
}

func addRef(dst, a, b []float32) {
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// Mul: dst[i] = a[i] * b[i].
func Mul(dst, a, b []float32) {
	if v := fast(); v != nil {
		parallelBin(v, dst, a, b, v.mulv)
		return
	}
	mulRef(dst, a, b)
}

func mulRef(dst, a, b []float32) {
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}

// AddScaled: dst[i] = a[i] + s*b[i] (axpy).
func AddScaled(dst, a []float32, s float32, b []float32) {
	if v := fast(); v != nil {
		parallelBin(v, dst, a, b, func(d, a, b *float32, n int) { v.axpy(d, a, s, b, n) })
		return
	}
	addScaledRef(dst, a, s, b)
}

func addScaledRef(dst, a []float32, s float32, b []float32) {
	for i := range dst {
		dst[i] = a[i] + s*b[i]
	}
}

// Scale: dst[i] = s*a[i].
func Scale(dst, a []float32, s float32) {
	if v := fast(); v != nil {
		parallelUn(v, a[:len(dst)], dst, func(x, y *float32, n int) { v.scaleAdd(y, x, n, s, 0) })
		return
	}
	scaleRef(dst, a, s)
}

func scaleRef(dst, a []float32, s float32) {
	for i := range dst {
		dst[i] = s * a[i]
	}
}

// AddRowVector adds v [cols] to every row of x [rows, cols] (a Linear bias).
func AddRowVector(x []float32, rows, cols int, v []float32) {
	if f := fast(); f != nil && cols > 0 {
		parallel.For(rows, max(1, eltGrain/cols), func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := x[r*cols : (r+1)*cols]
				bin(f, row, row, v[:cols], f.addv)
			}
		})
		return
	}
	addRowVectorRef(x, rows, cols, v)
}

func addRowVectorRef(x []float32, rows, cols int, v []float32) {
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		for i := range row {
			row[i] += v[i]
		}
	}
}

// AddChannelVector adds v[ch] to every element of channel ch of x [n, c, hw]
// (a per-channel bias, or a ResNet time embedding with n distinct vectors when
// len(v) == n*c).
func AddChannelVector(x []float32, n, c, hw int, v []float32) {
	if fast() != nil && hw > 0 {
		parallel.For(n*c, max(1, eltGrain/hw), func(lo, hi int) {
			for bc := lo; bc < hi; bc++ {
				add := v[bc%c]
				if len(v) == n*c {
					add = v[bc]
				}
				p := x[bc*hw : (bc+1)*hw]
				addScalar(p, p, add)
			}
		})
		return
	}
	addChannelVectorRef(x, n, c, hw, v)
}

func addChannelVectorRef(x []float32, n, c, hw int, v []float32) {
	for b := 0; b < n; b++ {
		for ch := 0; ch < c; ch++ {
			add := v[ch]
			if len(v) == n*c {
				add = v[b*c+ch]
			}
			p := x[(b*c+ch)*hw : (b*c+ch+1)*hw]
			for i := range p {
				p[i] += add
			}
		}
	}
}

// Upsample2xNearest: x [nc, h, w] -> y [nc, 2h, 2w], each pixel repeated 2×2.
// Rows are spread over the pool; each output row pair is one widening pass
// and one copy.
func Upsample2xNearest(x, y []float32, nc, h, w int) {
	if w == 0 {
		return
	}
	parallel.For(nc*h, max(1, eltGrain/(4*w)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src := x[r*w : (r+1)*w]
			d0 := y[2*r*2*w : (2*r+1)*2*w]
			d0 = d0[:2*len(src)]
			for j, v := range src {
				d0[2*j] = v
				d0[2*j+1] = v
			}
			copy(y[(2*r+1)*2*w:(2*r+2)*2*w], d0)
		}
	})
}

// AttentionParams describes multi-head attention over token-major buffers:
// Q is [batch, Lq, heads*dim] with row stride LdQ, K and V are [batch, Lk,
// heads*dim] with row strides LdK, LdV, and O is [batch, Lq, heads*dim] with
// row stride LdO; head h uses columns [h*dim, (h+1)*dim). Batch b starts at
// b*Lq*LdQ (Q, O) and b*Lk*LdK / b*Lk*LdV (K, V). Causal masks key j > query i.
type AttentionParams struct {
	Batch, Heads, Lq, Lk, Dim int
	LdQ, LdK, LdV, LdO        int
	Scale                     float32
	Causal                    bool
}

// Attention computes O = softmax(Q·Kᵀ·Scale [+ causal mask])·V per batch and
// head. Fast paths must not materialise an Lq×Lk score matrix per head.
//
//	o[b,i,h,:] = sum_j softmax_j(scale*<q[b,i,h,:], k[b,j,h,:]>) v[b,j,h,:]
func Attention(p AttentionParams, q, k, v, o []float32) {
	if ar := pickArch(14); ar != nil && fast() != nil {
		attentionFast(ar, fast(), p, q, k, v, o)
		return
	}
	attentionRef(p, q, k, v, o)
}

func attentionRef(p AttentionParams, q, k, v, o []float32) {
	s := make([]float32, p.Lk)
	for b := 0; b < p.Batch; b++ {
		qb, ob := q[b*p.Lq*p.LdQ:], o[b*p.Lq*p.LdO:]
		kb, vb := k[b*p.Lk*p.LdK:], v[b*p.Lk*p.LdV:]
		for h := 0; h < p.Heads; h++ {
			c0 := h * p.Dim
			for i := 0; i < p.Lq; i++ {
				n := p.Lk
				if p.Causal {
					n = min(i+1, p.Lk)
				}
				qi := qb[i*p.LdQ+c0 : i*p.LdQ+c0+p.Dim]
				for j := 0; j < n; j++ {
					kj := kb[j*p.LdK+c0 : j*p.LdK+c0+p.Dim]
					var d float32
					for t := range qi {
						d += qi[t] * kj[t]
					}
					s[j] = d * p.Scale
				}
				softmaxRef(s[:n], 1, n)
				oi := ob[i*p.LdO+c0 : i*p.LdO+c0+p.Dim]
				for t := range oi {
					oi[t] = 0
				}
				for j := 0; j < n; j++ {
					vj := vb[j*p.LdV+c0 : j*p.LdV+c0+p.Dim]
					for t := range oi {
						oi[t] += s[j] * vj[t]
					}
				}
			}
		}
	}
}
