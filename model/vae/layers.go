package vae

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// ResnetBlock2D is diffusers' ResnetBlock2D without a time embedding:
// out = shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))).
type ResnetBlock2D struct {
	Norm1        *nn.GroupNorm `weights:"norm1"`
	Conv1        *nn.Conv2d    `weights:"conv1"`
	Norm2        *nn.GroupNorm `weights:"norm2"`
	Conv2        *nn.Conv2d    `weights:"conv2"`
	ConvShortcut *nn.Conv2d    `weights:"conv_shortcut"` // 1×1, only when in != out
}

// NewResnetBlock2D makes an unbound block.
func NewResnetBlock2D(in, out, groups int) *ResnetBlock2D {
	r := &ResnetBlock2D{
		Norm1: nn.NewGroupNorm(groups, in, normEps),
		Conv1: nn.NewConv2d(in, out, 3, 1, 1, true),
		Norm2: nn.NewGroupNorm(groups, out, normEps),
		Conv2: nn.NewConv2d(out, out, 3, 1, 1, true),
	}
	if in != out {
		r.ConvShortcut = nn.NewConv2d(in, out, 1, 1, 0, true)
	}
	return r
}

// Forward maps every tile [N, in, h, w] to [N, out, h, w]; it consumes xs
// (and with the identity shortcut writes the output into them). The norms
// are fused into the convolutions that follow them (no normalised tensor is
// written) and conv2 adds into the shortcut.
func (r *ResnetBlock2D) Forward(xs Tiles) Tiles {
	st := sharedStats(xs, r.Norm1.Eps)
	res := make(Tiles, len(xs))
	h := make(Tiles, len(xs))
	for i, x := range xs {
		xs[i] = nil
		load(x)
		h[i] = r.Conv1.ForwardEx(x, normAffine(r.Norm1, st, x, true), nil, nil) // [N, out, h, w] conv1(SiLU(norm1(x)))
		derive(x, h[i])
		park(h[i])
		if r.ConvShortcut != nil {
			res[i] = shortcut(r.ConvShortcut, x, len(xs) == 1 && h[i].HasData()) // [N, out, h, w]
			park(res[i])
		} else {
			res[i] = x // [N, out, h, w] identity
			unload(x)
		}
	}
	st = sharedStats(h, r.Norm2.Eps)
	for i, t := range h {
		h[i] = nil
		load(t)
		changed(load(res[i]))                                                       // conv2 adds into it
		xs[i] = r.Conv2.ForwardEx(t, normAffine(r.Norm2, st, t, true), res[i], nil) // [N, out, h, w] shortcut + conv2(SiLU(norm2(h)))
		consume(t)
		park(xs[i])
		res[i] = nil
	}
	return xs
}

// shortcut is the conv_shortcut of a ResnetBlock2D: it consumes x and
// returns conv(x) registered in its place. With inPlace (an untiled run
// whose h, the block's other output, is in memory), a 1×1 shortcut that
// narrows the channels (the decoder's 512→256 and 256→128) writes over x's
// own buffer (nn.Conv2d.ForwardShrinkInPlace), x being the run's own
// registered tensor: the step then holds x and h, not x, h and the shortcut
// (the 512×512 decode's most memory at once, 536 → 402 MB). A tiled run
// parks h before the shortcut when memory is short, so that its step holds
// x and one output either way, and there the result keeps a buffer of its
// own: tiles holding buffers twice their size through the parks and loads
// that follow took the 2048×2048 run's peak from 5.5 to 7.8 GiB.
func shortcut(c *nn.Conv2d, x *tensor.Tensor, inPlace bool) *tensor.Tensor {
	if inPlace && spillOf(x) != nil {
		if y, ok := c.ForwardShrinkInPlace(x); ok {
			derive(x, y)
			release(x) // x's buffer is y's now
			x.DropData()
			return y
		}
	}
	y := c.Forward(x)
	derive(x, y)
	consume(x)
	return y
}

// Attention is diffusers' Attention as the VAE mid block builds it: one head
// of width C, group_norm before, bias on every projection, a residual
// connection, rescale_output_factor 1. Tokens are the h·w pixels of one tile.
type Attention struct {
	GroupNorm *nn.GroupNorm `weights:"group_norm"`
	ToQ       *nn.Linear    `weights:"to_q"`
	ToK       *nn.Linear    `weights:"to_k"`
	ToV       *nn.Linear    `weights:"to_v"`
	ToOut     *nn.Linear    `weights:"to_out.0"`
	Channels  int
}

// NewAttention makes an unbound single-head attention over c channels.
func NewAttention(c, groups int) *Attention {
	return &Attention{
		GroupNorm: nn.NewGroupNorm(groups, c, normEps),
		ToQ:       nn.NewLinear(c, c, true),
		ToK:       nn.NewLinear(c, c, true),
		ToV:       nn.NewLinear(c, c, true),
		ToOut:     nn.NewLinear(c, c, true),
		Channels:  c,
	}
}

// Forward maps every tile [N, C, h, w] to x + attention(group_norm(x)),
// attending over the tile's own pixels; it consumes xs.
func (a *Attention) Forward(xs Tiles) Tiles {
	st := sharedStats(xs, a.GroupNorm.Eps)
	for i, x := range xs {
		xs[i] = tileStep(x, func(x *tensor.Tensor) *tensor.Tensor {
			t := tensor.Empty(x.Shape()...)         // written in full
			applyNorm(a.GroupNorm, st, x, t, false) // [N, C, h, w]
			y := a.attend(t)                        // [N, C, h, w]
			tensor.Free(t.Storage())                // t's last use
			nn.AddInPlace(y, x)                     // [N, C, h, w] + residual
			return y
		})
	}
	return xs
}

// attend is the attention itself on a normalised tile x [N, C, h, w]: the
// projections read and write channel-major planes directly (token i of
// sample b is column i of x[b] viewed as [C, h·w]).
func (a *Attention) attend(x *tensor.Tensor) *tensor.Tensor {
	n, c := x.Dim(0), x.Dim(1)
	if c != a.Channels {
		panic(fmt.Sprintf("vae.Attention: input %v, want %d channels", x.Shape(), a.Channels))
	}
	l := x.Dim(2) * x.Dim(3)
	y := tensor.Empty(x.Shape()...) // [N, C, h, w], written in full
	q := make([]float32, l*c)       // [L, C] token-major
	k := make([]float32, l*c)
	v := make([]float32, l*c)
	o := make([]float32, l*c)
	xd, yd := x.Data(), y.Data()
	proj := func(lin *nn.Linear, src, dst []float32) { // dst [L, C] = srcᵀ·Wᵀ + b, src [C, L]
		kernels.SgemmMat(true, true, l, c, c, 1, kernels.F32(src), l, lin.Mat(), c, 0, dst, c)
		kernels.AddRowVector(dst, l, c, lin.Bias.Data())
	}
	for b := 0; b < n; b++ {
		src := xd[b*c*l : (b+1)*c*l] // [C, L]
		proj(a.ToQ, src, q)          // [L, C]
		proj(a.ToK, src, k)          // [L, C]
		proj(a.ToV, src, v)          // [L, C]
		kernels.Attention(kernels.AttentionParams{
			Batch: 1, Heads: 1, Lq: l, Lk: l, Dim: c, LdQ: c, LdK: c, LdV: c, LdO: c,
			Scale: float32(1 / math.Sqrt(float64(c))),
		}, q, k, v, o) // [L, C] softmax(q·kᵀ/√C)·v
		dst := yd[b*c*l : (b+1)*c*l]                                                              // [C, L]
		kernels.SgemmMat(false, true, c, l, c, 1, a.ToOut.Mat(), c, kernels.F32(o), c, 0, dst, l) // W·oᵀ
		kernels.AddChannelVector(dst, 1, c, l, a.ToOut.Bias.Data())                               // + b
	}
	return y
}

// Downsample2D is diffusers' Downsample2D with use_conv and padding 0: a zero
// pad of one row at the bottom and one column at the right, then a 3×3
// stride-2 convolution.
type Downsample2D struct {
	Conv *nn.Conv2d `weights:"conv"`
}

// NewDownsample2D makes an unbound downsampler on c channels.
func NewDownsample2D(c int) *Downsample2D {
	conv := nn.NewConv2d(c, c, 3, 2, 0, true)
	conv.P.PadB, conv.P.PadR = 1, 1
	return &Downsample2D{Conv: conv}
}

// Forward maps every tile [N, C, h, w] to [N, C, ⌈h/2⌉, ⌈w/2⌉]; it consumes xs.
func (d *Downsample2D) Forward(xs Tiles) Tiles {
	for i, x := range xs {
		xs[i] = tileStep(x, d.Conv.Forward) // [N, C, ⌈h/2⌉, ⌈w/2⌉]
	}
	return xs
}

// Upsample2D is diffusers' Upsample2D with use_conv: nearest ×2, then a 3×3
// convolution.
type Upsample2D struct {
	Conv *nn.Conv2d `weights:"conv"`
}

// NewUpsample2D makes an unbound upsampler on c channels.
func NewUpsample2D(c int) *Upsample2D {
	return &Upsample2D{Conv: nn.NewConv2d(c, c, 3, 1, 1, true)}
}

// Forward maps every tile [N, C, h, w] to [N, C, 2h, 2w]; it consumes xs.
func (u *Upsample2D) Forward(xs Tiles) Tiles {
	for i, x := range xs {
		xs[i] = nil
		c, w := x.Dim(1), x.Dim(3)
		rows := max(upsampleBandBytes/(4*c*2*w)-2, 2)
		xs[i] = tileStep(x, func(x *tensor.Tensor) *tensor.Tensor { return u.forward(x, rows) }) // [N, C, 2h, 2w]
	}
	return xs
}

// upsampleBandBytes bounds the upsampled input band that Upsample2D
// materialises at a time (or the phase convolutions' band buffers).
const upsampleBandBytes = 16 << 20

// upsampleViaImage makes Upsample2D convolve the upsampled image even where
// the phase convolutions apply (nn.Conv2d.ForwardUpsample2x): for tests
// and A/B measurements.
var upsampleViaImage = false

// forward convolves the ×2 nearest upsampling of x [N, C, h, w]: by the four
// phase convolutions of x where they apply, else without materialising all
// of the upsampled image: output rows are computed in bands of at most rows
// rows, each from the upsampled rows it needs (one halo row above and below,
// or the conv's zero padding at the image border).
func (u *Upsample2D) forward(x *tensor.Tensor, rows int) *tensor.Tensor {
	if u.Conv.CanUpsampleConv() && !upsampleViaImage {
		// Four 2×2 phase convolutions of x: 4/9 of the multiply-adds.
		return u.Conv.ForwardUpsample2x(x, upsampleBandBytes) // [N, C, 2h, 2w]
	}
	x = x.Contiguous()
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	oc := u.Conv.P.OutC
	H, W := 2*h, 2*w
	y := tensor.Empty(n, oc, H, W) // [N, OC, 2h, 2w], written in full
	rows = min(max(rows, 1), H)
	buf := make([]float32, c*(rows+2)*W)
	out := make([]float32, oc*rows*W)
	xd, yd := x.Data(), y.Data()
	for b := 0; b < n; b++ {
		xb := xd[b*c*h*w : (b+1)*c*h*w]
		for r0 := 0; r0 < H; r0 += rows {
			r1 := min(r0+rows, H)
			lo, hi := max(r0-1, 0), min(r1+1, H) // upsampled rows the band reads
			br := hi - lo
			band := buf[:c*br*W] // [C, br, 2w] rows lo..hi of the upsampled input
			parallel.For(c, 1, func(c0, c1 int) {
				for ch := c0; ch < c1; ch++ {
					for r := lo; r < hi; r++ {
						src := xb[(ch*h+r/2)*w : (ch*h+r/2+1)*w]
						dst := band[(ch*br+r-lo)*W : (ch*br+r-lo+1)*W]
						for j, v := range src {
							dst[2*j], dst[2*j+1] = v, v
						}
					}
				}
			})
			p := u.Conv.P
			p.PadT, p.PadB = 0, 0
			if r0 == 0 {
				p.PadT = 1
			}
			if r1 == H {
				p.PadB = 1
			}
			o := out[:oc*(r1-r0)*W]
			u.Conv.ForwardRaw(p, 1, br, W, band, o) // [OC, r1-r0, 2w]
			// Into place, on every worker: y is fresh (unzeroed) memory,
			// so this copy also takes its page faults.
			parallel.For(oc, 1, func(c0, c1 int) {
				for ch := c0; ch < c1; ch++ {
					copy(yd[((b*oc+ch)*H+r0)*W:((b*oc+ch)*H+r1)*W], o[ch*(r1-r0)*W:(ch+1)*(r1-r0)*W])
				}
			})
		}
	}
	return y
}

// DownEncoderBlock2D is layers_per_block resnets, then (except in the last
// block) a Downsample2D.
type DownEncoderBlock2D struct {
	Resnets      []*ResnetBlock2D `weights:"resnets"`
	Downsamplers []*Downsample2D  `weights:"downsamplers"` // zero or one
}

// NewDownEncoderBlock2D makes an unbound block.
func NewDownEncoderBlock2D(in, out, layers, groups int, downsample bool) *DownEncoderBlock2D {
	b := &DownEncoderBlock2D{}
	for i := 0; i < layers; i++ {
		inC := out
		if i == 0 {
			inC = in
		}
		b.Resnets = append(b.Resnets, NewResnetBlock2D(inC, out, groups))
	}
	if downsample {
		b.Downsamplers = []*Downsample2D{NewDownsample2D(out)}
	}
	return b
}

// Forward maps every tile [N, in, h, w] to [N, out, h', w'] (h' = ⌈h/2⌉ with
// a downsampler, else h); it consumes xs.
func (b *DownEncoderBlock2D) Forward(xs Tiles) Tiles {
	for _, r := range b.Resnets {
		xs = r.Forward(xs) // [N, out, h, w]
	}
	for _, d := range b.Downsamplers {
		xs = d.Forward(xs) // [N, out, h/2, w/2]
	}
	return xs
}

// UpDecoderBlock2D is layers_per_block+1 resnets, then (except in the last
// block) an Upsample2D.
type UpDecoderBlock2D struct {
	Resnets    []*ResnetBlock2D `weights:"resnets"`
	Upsamplers []*Upsample2D    `weights:"upsamplers"` // zero or one
}

// NewUpDecoderBlock2D makes an unbound block with layers resnets.
func NewUpDecoderBlock2D(in, out, layers, groups int, upsample bool) *UpDecoderBlock2D {
	b := &UpDecoderBlock2D{}
	for i := 0; i < layers; i++ {
		inC := out
		if i == 0 {
			inC = in
		}
		b.Resnets = append(b.Resnets, NewResnetBlock2D(inC, out, groups))
	}
	if upsample {
		b.Upsamplers = []*Upsample2D{NewUpsample2D(out)}
	}
	return b
}

// Forward maps every tile [N, in, h, w] to [N, out, h', w'] (h' = 2h with an
// upsampler, else h); it consumes xs.
func (b *UpDecoderBlock2D) Forward(xs Tiles) Tiles {
	for _, r := range b.Resnets {
		xs = r.Forward(xs) // [N, out, h, w]
	}
	for _, u := range b.Upsamplers {
		xs = u.Forward(xs) // [N, out, 2h, 2w]
	}
	return xs
}

// UNetMidBlock2D is resnet, attention, resnet at constant width.
type UNetMidBlock2D struct {
	Resnets    []*ResnetBlock2D `weights:"resnets"`
	Attentions []*Attention     `weights:"attentions"`
}

// NewUNetMidBlock2D makes an unbound mid block on c channels.
func NewUNetMidBlock2D(c, groups int) *UNetMidBlock2D {
	return &UNetMidBlock2D{
		Resnets:    []*ResnetBlock2D{NewResnetBlock2D(c, c, groups), NewResnetBlock2D(c, c, groups)},
		Attentions: []*Attention{NewAttention(c, groups)},
	}
}

// Forward maps every tile [N, C, h, w] to [N, C, h, w]; it consumes xs.
func (m *UNetMidBlock2D) Forward(xs Tiles) Tiles {
	xs = m.Resnets[0].Forward(xs) // [N, C, h, w]
	for i, a := range m.Attentions {
		xs = a.Forward(xs)              // [N, C, h, w]
		xs = m.Resnets[i+1].Forward(xs) // [N, C, h, w]
	}
	return xs
}
