package unet

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// ResnetBlock2D is diffusers' ResnetBlock2D with time_embedding_norm
// "default" and output_scale_factor 1:
// x + conv2(SiLU(GN(conv1(SiLU(GN(x))) + time_emb_proj(SiLU(temb))))),
// with a 1×1 conv_shortcut on x when the channel count changes.
type ResnetBlock2D struct {
	Norm1        *nn.GroupNorm `weights:"norm1"`
	Conv1        *nn.Conv2d    `weights:"conv1"`
	TimeEmbProj  *nn.Linear    `weights:"time_emb_proj"`
	Norm2        *nn.GroupNorm `weights:"norm2"`
	Conv2        *nn.Conv2d    `weights:"conv2"`
	ConvShortcut *nn.Conv2d    `weights:"conv_shortcut"` // nil when in == out
	In, Out      int
}

// NewResnetBlock2D makes an unbound block.
func NewResnetBlock2D(in, out, tembDim, groups int, eps float32) *ResnetBlock2D {
	r := &ResnetBlock2D{
		Norm1:       nn.NewGroupNorm(groups, in, eps),
		Conv1:       nn.NewConv2d(in, out, 3, 1, 1, true),
		TimeEmbProj: nn.NewLinear(tembDim, out, true),
		Norm2:       nn.NewGroupNorm(groups, out, eps),
		Conv2:       nn.NewConv2d(out, out, 3, 1, 1, true),
		In:          in,
		Out:         out,
	}
	if in != out {
		r.ConvShortcut = nn.NewConv2d(in, out, 1, 1, 0, true)
	}
	return r
}

// Forward maps x [N, In, H, W] to [N, Out, H, W]; tembAct is SiLU(temb)
// [N, tembDim], computed once per UNet call (diffusers applies the SiLU inside
// every block; the values are the same).
func (r *ResnetBlock2D) Forward(x, tembAct *tensor.Tensor) *tensor.Tensor {
	if x.Rank() != 4 || x.Dim(1) != r.In {
		panic(fmt.Sprintf("unet.ResnetBlock2D: input %v, want [N, %d, H, W]", x.Shape(), r.In))
	}
	n, hw := x.Dim(0), x.Dim(2)*x.Dim(3)
	t := r.TimeEmbProj.Forward(tembAct) // [N, Out]
	pre1 := r.Norm1.Affine(x, true)     // SiLU(norm1(·)), fused into conv1
	var h *tensor.Tensor
	if n == 1 && r.Conv1.Bias != nil {
		bias := make([]float32, r.Out) // conv1's bias + the time embedding
		kernels.Add(bias, r.Conv1.Bias.Data(), t.Data())
		h = r.Conv1.ForwardEx(x, pre1, nil, bias) // [N, Out, H, W]
	} else {
		h = r.Conv1.ForwardEx(x, pre1, nil, nil)                   // [N, Out, H, W]
		kernels.AddChannelVector(h.Data(), n, r.Out, hw, t.Data()) // [N, Out, H, W]
	}
	pre2 := r.Norm2.Affine(h, true) // SiLU(norm2(·)), fused into conv2
	if r.ConvShortcut != nil {
		return r.Conv2.ForwardEx(h, pre2, r.ConvShortcut.Forward(x), nil) // [N, Out, H, W] shortcut(x) + conv2
	}
	return nn.AddInPlace(r.Conv2.ForwardEx(h, pre2, nil, nil), x) // [N, Out, H, W] x + conv2 (x is kept: skips)
}

// Downsample2D is diffusers' Downsample2D with use_conv: a 3×3 stride-2 conv.
type Downsample2D struct {
	Conv *nn.Conv2d `weights:"conv"`
}

// NewDownsample2D makes an unbound downsampler (padding = downsample_padding).
func NewDownsample2D(ch, padding int) *Downsample2D {
	return &Downsample2D{Conv: nn.NewConv2d(ch, ch, 3, 2, padding, true)}
}

// Forward maps [N, C, H, W] to [N, C, ⌈H/2⌉, ⌈W/2⌉] (padding 1).
func (d *Downsample2D) Forward(x *tensor.Tensor) *tensor.Tensor {
	return d.Conv.Forward(x) // [N, C, H', W']
}

// Upsample2D is diffusers' Upsample2D with use_conv: nearest-neighbour
// resize (×2, or to the skip connection's size) then a 3×3 conv.
type Upsample2D struct {
	Conv *nn.Conv2d `weights:"conv"`
}

// NewUpsample2D makes an unbound upsampler.
func NewUpsample2D(ch int) *Upsample2D {
	return &Upsample2D{Conv: nn.NewConv2d(ch, ch, 3, 1, 1, true)}
}

// Forward maps x [N, C, H, W] to [N, C, oh, ow]; oh, ow are 2H, 2W in the
// regular case and the next skip connection's size when the latent is not a
// multiple of 2^(number of upsamplers) (diffusers' forward_upsample_size).
// An exact ×2 runs as four 2×2 phase convolutions of x, 4/9 of the
// multiply-adds (nn.Conv2d.ForwardUpsample2x).
func (u *Upsample2D) Forward(x *tensor.Tensor, oh, ow int) *tensor.Tensor {
	if oh == 2*x.Dim(2) && ow == 2*x.Dim(3) && u.Conv.CanUpsampleConv() && !upsampleViaImage {
		return u.Conv.ForwardUpsample2x(x, upsampleBandBytes) // [N, C, 2H, 2W]
	}
	h := resizeNearest(x, oh, ow) // [N, C, oh, ow]
	return u.Conv.Forward(h)      // [N, C, oh, ow]
}

// upsampleBandBytes bounds the band buffers of the phase convolutions;
// upsampleViaImage makes Upsample2D convolve the upsampled image instead
// (tests, A/B measurements).
var (
	upsampleBandBytes = 16 << 20
	upsampleViaImage  = false
)

// resizeNearest is F.interpolate(mode="nearest", size=(oh, ow)) as PyTorch's
// CPU kernel computes it: src = min(floor(dst·(in/out)), in-1) with a float32
// scale, and exact ×2 handled as dst/2.
func resizeNearest(x *tensor.Tensor, oh, ow int) *tensor.Tensor {
	x = x.Contiguous()
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	if oh == 2*h && ow == 2*w {
		return nn.Upsample2x(x) // [N, C, 2H, 2W]
	}
	rows, cols := nearestIndex(h, oh), nearestIndex(w, ow)
	y := tensor.New(n, c, oh, ow) // [N, C, oh, ow]
	xd, yd := x.Data(), y.Data()
	for p := 0; p < n*c; p++ {
		src, dst := xd[p*h*w:(p+1)*h*w], yd[p*oh*ow:(p+1)*oh*ow]
		for i, si := range rows {
			for j, sj := range cols {
				dst[i*ow+j] = src[si*w+sj]
			}
		}
	}
	return y
}

// nearestIndex maps each of out output positions to its source position.
func nearestIndex(in, out int) []int {
	idx := make([]int, out)
	scale := float32(in) / float32(out)
	for i := range idx {
		switch {
		case out == in:
			idx[i] = i
		case out == 2*in:
			idx[i] = i >> 1
		default:
			idx[i] = min(int(float32(i)*scale), in-1) // floor of a non-negative float32
		}
	}
	return idx
}
