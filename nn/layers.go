package nn

import (
	"fmt"
	"unsafe"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/kernels/bf16"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// Linear is torch.nn.Linear: y = x·Wᵀ + b over the last dimension.
type Linear struct {
	Weight *tensor.Tensor `weights:"weight"` // [out, in]
	Bias   *tensor.Tensor `weights:"bias"`   // [out] or nil
	In     int
	Out    int

	w16      []uint16          // the weight in float16 (StoreF16), Weight then has no data
	packOnly bool              // StoreBF16: drop w16 once bf is packed
	bf       *bf16.RightMatrix // weights packed for BF16 (see SetPrecision)
	bfSrc    unsafe.Pointer    // the weight data bf was packed from
}

// NewLinear makes an unbound Linear (bias optional).
func NewLinear(in, out int, bias bool) *Linear {
	l := &Linear{Weight: tensor.Shaped(out, in), In: in, Out: out}
	if bias {
		l.Bias = tensor.Shaped(out)
	}
	return l
}

// Forward maps x [..., In] to [..., Out].
func (l *Linear) Forward(x *tensor.Tensor) *tensor.Tensor {
	if x.Dim(-1) != l.In {
		panic(fmt.Sprintf("nn.Linear: input %v, want last dim %d", x.Shape(), l.In))
	}
	x = x.Contiguous()
	rows := x.Numel() / l.In
	shape := append(append([]int(nil), x.Shape()[:x.Rank()-1]...), l.Out)
	y := tensor.Empty(shape...) // [..., Out], written in full
	if l.useBF16() {
		var b []float32
		if l.Bias != nil {
			b = l.Bias.Data()
		}
		l.bf16Right().Gemm(rows, x.Data(), l.In, b, y.Data(), l.Out) // x·Wᵀ + b in bf16
		return y
	}
	kernels.SgemmMat(false, true, rows, l.Out, l.In, 1, kernels.F32(x.Data()), l.In, l.Mat(), l.In, 0, y.Data(), l.Out) // x·Wᵀ
	if l.Bias != nil {
		kernels.AddRowVector(y.Data(), rows, l.Out, l.Bias.Data()) // + b
	}
	return y
}

// Conv2d is torch.nn.Conv2d (groups 1) with an optional asymmetric padding.
type Conv2d struct {
	Weight *tensor.Tensor `weights:"weight"` // [OutC, InC, KH, KW]
	Bias   *tensor.Tensor `weights:"bias"`   // [OutC] or nil
	P      kernels.Conv2DParams

	w16      []uint16         // the weight in float16 (StoreF16), Weight then has no data
	packOnly bool             // StoreBF16: drop w16 once bf is packed
	bf       *bf16.LeftMatrix // weights packed for BF16 (see SetPrecision)
	bfSrc    unsafe.Pointer   // the weight data bf was packed from
	// The four phase convolutions' weights packed for BF16, for an exact ×2
	// upsampling (see ForwardUpsample2x), and the data they were made from.
	bfUp    *[4]*bf16.LeftMatrix
	bfUpSrc unsafe.Pointer
}

// NewConv2d makes an unbound square-kernel convolution with symmetric padding.
func NewConv2d(in, out, k, stride, pad int, bias bool) *Conv2d {
	c := &Conv2d{
		Weight: tensor.Shaped(out, in, k, k),
		P: kernels.Conv2DParams{InC: in, OutC: out, KH: k, KW: k, StrideH: stride, StrideW: stride,
			PadT: pad, PadB: pad, PadL: pad, PadR: pad},
	}
	if bias {
		c.Bias = tensor.Shaped(out)
	}
	return c
}

// Forward maps x [N, InC, H, W] to [N, OutC, OH, OW].
func (c *Conv2d) Forward(x *tensor.Tensor) *tensor.Tensor {
	return c.ForwardEx(x, nil, nil, nil) // [N, OutC, OH, OW]
}

// ForwardEx is Forward with fusions: pre (nil: none) transforms x as the
// convolution reads it (GroupNorm.Affine: the normalisation fused into the
// convolution); with into not nil the result is added into it (into [N,
// OutC, OH, OW], e.g. a residual) and into is returned; bias, when not nil,
// replaces the layer's own bias.
func (c *Conv2d) ForwardEx(x *tensor.Tensor, pre *kernels.ChannelAffine, into *tensor.Tensor, bias []float32) *tensor.Tensor {
	if x.Rank() != 4 || x.Dim(1) != c.P.InC {
		panic(fmt.Sprintf("nn.Conv2d: input %v, want [N, %d, H, W]", x.Shape(), c.P.InC))
	}
	x = x.Contiguous()
	n, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	oh, ow := c.P.OutSize(h, w)
	o := kernels.ConvOptions{Pre: pre}
	y := into
	if y == nil {
		y = tensor.Empty(n, c.P.OutC, oh, ow) // [N, OutC, OH, OW], written in full
	} else {
		if y.Rank() != 4 || y.Dim(0) != n || y.Dim(1) != c.P.OutC || y.Dim(2) != oh || y.Dim(3) != ow || !y.IsContiguous() {
			panic(fmt.Sprintf("nn.Conv2d: accumulating into %v, want contiguous [%d, %d, %d, %d]", y.Shape(), n, c.P.OutC, oh, ow))
		}
		o.Accumulate = true
	}
	if bias == nil && c.Bias != nil {
		bias = c.Bias.Data()
	}
	if c.useBF16() {
		c.bf16Left().Conv2DEx(c.P, n, h, w, x.Data(), bias, y.Data(), o) // in bf16
		return y
	}
	kernels.Conv2DEx(c.P, n, h, w, x.Data(), c.Mat(), bias, y.Data(), o)
	return y
}

// ForwardRaw runs the layer's weights and bias as a convolution with other
// parameters p (same channels and kernel size; e.g. a band of rows with its
// own padding) on raw NCHW data: y [n, OutC, oh, ow] = conv(x [n, InC, h, w]),
// in the layer's precision.
func (c *Conv2d) ForwardRaw(p kernels.Conv2DParams, n, h, w int, x, y []float32) {
	if p.InC != c.P.InC || p.OutC != c.P.OutC || p.KH != c.P.KH || p.KW != c.P.KW {
		panic(fmt.Sprintf("nn.Conv2d: raw params %+v do not fit the weights %+v", p, c.P))
	}
	var b []float32
	if c.Bias != nil {
		b = c.Bias.Data()
	}
	if c.useBF16() {
		c.bf16Left().Conv2D(p, n, h, w, x, b, y) // in bf16
		return
	}
	kernels.Conv2DMat(p, n, h, w, x, c.Mat(), b, y)
}

// shrinkBandBytes bounds the buffer of one band of ForwardShrinkInPlace's
// output (all output channels of a band of pixels).
const shrinkBandBytes = 2 << 20

// ForwardShrinkInPlace is Forward for a 1×1 convolution (stride 1, no
// padding) that narrows the channels (OutC ≤ InC) of one sample x [1, InC,
// H, W] whose buffer the caller owns alone: the result [1, OutC, H, W] is
// written over x's first OutC channel planes, a band of pixels at a time, so
// that no second activation of x's size is alive. x's values are destroyed;
// the result shares x's storage (with its capacity). Any other layer or
// input, and the bf16 precision, run Forward instead (a new tensor, x
// untouched); inPlace reports which. The result equals Forward's up to the
// rounding of the bias, added after the sum here.
//
//	for p0 in bands of pixels: t[o, p] = Σ_c W[o, c]·x[c, p0+p]  (p < band)
//	                           x[o, p0+p] = t[o, p] + b[o]       (o < OutC)
func (c *Conv2d) ForwardShrinkInPlace(x *tensor.Tensor) (y *tensor.Tensor, inPlace bool) {
	p := c.P
	if p.KH != 1 || p.KW != 1 || p.StrideH != 1 || p.StrideW != 1 || p.PadT|p.PadB|p.PadL|p.PadR != 0 ||
		max(p.DilH, 1) != 1 || max(p.DilW, 1) != 1 || p.OutC > p.InC ||
		x.Rank() != 4 || x.Dim(0) != 1 || x.Dim(1) != p.InC || !x.IsContiguous() || c.useBF16() {
		return c.Forward(x), false
	}
	hw := x.Dim(2) * x.Dim(3)
	xd := x.Data()
	band := min(hw, max(64, shrinkBandBytes/(4*p.OutC)/64*64))
	t := make([]float32, p.OutC*band)
	w := c.Mat()
	var b []float32
	if c.Bias != nil {
		b = c.Bias.Data()
	}
	for p0 := 0; p0 < hw; p0 += band {
		n := min(band, hw-p0)
		kernels.SgemmMat(false, false, p.OutC, n, p.InC, 1, w, p.InC, kernels.F32(xd[p0:]), hw, 0, t[:p.OutC*n], n) // [OutC, n]: every input channel of the band read
		if b != nil {
			kernels.AddChannelVector(t[:p.OutC*n], 1, p.OutC, n, b) // + b
		}
		parallel.For(p.OutC, 8, func(o0, o1 int) {
			for o := o0; o < o1; o++ {
				copy(xd[o*hw+p0:o*hw+p0+n], t[o*n:(o+1)*n])
			}
		})
	}
	return tensor.FromData(xd[:p.OutC*hw], 1, p.OutC, x.Dim(2), x.Dim(3)), true // [1, OutC, H, W] over x's first planes
}

// GroupNorm is torch.nn.GroupNorm with affine weights.
type GroupNorm struct {
	Weight *tensor.Tensor `weights:"weight"` // [C]
	Bias   *tensor.Tensor `weights:"bias"`   // [C]
	Groups int
	Eps    float32
}

// NewGroupNorm makes an unbound GroupNorm.
func NewGroupNorm(groups, channels int, eps float32) *GroupNorm {
	return &GroupNorm{Weight: tensor.Shaped(channels), Bias: tensor.Shaped(channels), Groups: groups, Eps: eps}
}

// Forward normalises x [N, C, ...]; with silu it applies SiLU after (fused).
func (g *GroupNorm) Forward(x *tensor.Tensor, silu bool) *tensor.Tensor {
	x = x.Contiguous()
	n, c := x.Dim(0), x.Dim(1)
	y := tensor.Empty(x.Shape()...) // same shape as x
	kernels.GroupNorm(x.Data(), y.Data(), n, c, x.Numel()/(n*c), g.Groups, g.Eps, g.Weight.Data(), g.Bias.Data(), silu)
	return y
}

// Affine returns the per-(sample, channel) transform that Forward(x, silu)
// applies, to fuse the normalisation into a convolution (Conv2d.ForwardEx)
// instead of writing the normalised tensor.
func (g *GroupNorm) Affine(x *tensor.Tensor, silu bool) *kernels.ChannelAffine {
	x = x.Contiguous()
	n, c := x.Dim(0), x.Dim(1)
	sc, sh := kernels.GroupNormAffine(x.Data(), n, c, x.Numel()/(n*c), g.Groups, g.Eps, g.Weight.Data(), g.Bias.Data())
	return &kernels.ChannelAffine{Scale: sc, Shift: sh, SiLU: silu}
}

// LayerNorm is torch.nn.LayerNorm over the last dimension.
type LayerNorm struct {
	Weight *tensor.Tensor `weights:"weight"` // [D]
	Bias   *tensor.Tensor `weights:"bias"`   // [D]
	Eps    float32
}

// NewLayerNorm makes an unbound LayerNorm.
func NewLayerNorm(d int, eps float32) *LayerNorm {
	return &LayerNorm{Weight: tensor.Shaped(d), Bias: tensor.Shaped(d), Eps: eps}
}

// Forward normalises x [..., D].
func (l *LayerNorm) Forward(x *tensor.Tensor) *tensor.Tensor {
	x = x.Contiguous()
	d := x.Dim(-1)
	y := tensor.Empty(x.Shape()...) // same shape as x
	kernels.LayerNorm(x.Data(), y.Data(), x.Numel()/d, d, l.Eps, l.Weight.Data(), l.Bias.Data())
	return y
}

// Embedding is torch.nn.Embedding.
type Embedding struct {
	Weight *tensor.Tensor `weights:"weight"` // [num, dim]

	w16 []uint16 // the table in float16 (StoreF16, StoreBF16), Weight then has no data
}

// NewEmbedding makes an unbound Embedding.
func NewEmbedding(num, dim int) *Embedding { return &Embedding{Weight: tensor.Shaped(num, dim)} }

// Forward looks up ids, giving [len(ids), dim].
func (e *Embedding) Forward(ids []int) *tensor.Tensor {
	num, dim := e.Weight.Dim(0), e.Weight.Dim(1)
	w := mat(e.Weight, e.w16, "Embedding")
	y := tensor.New(len(ids), dim) // [L, dim]
	for i, id := range ids {
		if id < 0 || id >= num {
			panic(fmt.Sprintf("nn.Embedding: id %d out of range [0,%d)", id, num))
		}
		w.Read(y.Data()[i*dim:(i+1)*dim], id*dim)
	}
	return y
}
