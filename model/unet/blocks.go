package unet

import (
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// DownBlock2D is diffusers' DownBlock2D and, when it has attentions,
// CrossAttnDownBlock2D (the same layout with a Transformer2DModel after each
// resnet): resnets, then an optional stride-2 downsampler. Every resnet (or
// resnet+attention) output and the downsampler output are skip connections.
type DownBlock2D struct {
	Resnets      []ResnetBlock2D      `weights:"resnets"`
	Attentions   []Transformer2DModel `weights:"attentions"`   // CrossAttnDownBlock2D only
	Downsamplers []Downsample2D       `weights:"downsamplers"` // none in the last block
	Type         string               // "CrossAttnDownBlock2D" or "DownBlock2D"
}

// Forward maps x [N, Cin, H, W] to [N, Cout, H', W'] and returns the skip
// connections in order.
func (d *DownBlock2D) Forward(x, tembAct, ctx *tensor.Tensor) (*tensor.Tensor, []*tensor.Tensor) {
	var skips []*tensor.Tensor
	for i := range d.Resnets {
		x = d.Resnets[i].Forward(x, tembAct) // [N, Cout, H, W]
		if len(d.Attentions) > 0 {
			x = d.Attentions[i].forwardInPlace(x, ctx) // [N, Cout, H, W]
		}
		skips = append(skips, x)
	}
	for i := range d.Downsamplers {
		x = d.Downsamplers[i].Forward(x) // [N, Cout, H/2, W/2]
		skips = append(skips, x)
	}
	return x, skips
}

// UNetMidBlock2DCrossAttn is diffusers' mid block: resnet, then
// (transformer, resnet) pairs.
type UNetMidBlock2DCrossAttn struct {
	Resnets    []ResnetBlock2D      `weights:"resnets"`
	Attentions []Transformer2DModel `weights:"attentions"`
}

// Forward maps [N, C, H, W] to [N, C, H, W].
func (m *UNetMidBlock2DCrossAttn) Forward(x, tembAct, ctx *tensor.Tensor) *tensor.Tensor {
	x = m.Resnets[0].Forward(x, tembAct) // [N, C, H, W]
	for i := range m.Attentions {
		x = m.Attentions[i].forwardInPlace(x, ctx) // [N, C, H, W]
		x = m.Resnets[i+1].Forward(x, tembAct)     // [N, C, H, W]
	}
	return x
}

// UpBlock2D is diffusers' UpBlock2D and, when it has attentions,
// CrossAttnUpBlock2D: each resnet takes the running state concatenated with
// the most recent unused skip connection, then an optional upsampler.
type UpBlock2D struct {
	Resnets    []ResnetBlock2D      `weights:"resnets"`
	Attentions []Transformer2DModel `weights:"attentions"` // CrossAttnUpBlock2D only
	Upsamplers []Upsample2D         `weights:"upsamplers"` // none in the last block
	Type       string               // "CrossAttnUpBlock2D" or "UpBlock2D"
}

// Forward maps x [N, Cprev, H, W] with skips (len(Resnets) of them, consumed
// from the last) to [N, Cout, oh, ow]; oh, ow is the upsampler's output size.
func (u *UpBlock2D) Forward(x *tensor.Tensor, skips []*tensor.Tensor, tembAct, ctx *tensor.Tensor, oh, ow int) *tensor.Tensor {
	for i := range u.Resnets {
		s := skips[len(skips)-1-i]
		x = nn.ConcatChannels(x, s)          // [N, C + Cskip, H, W]
		x = u.Resnets[i].Forward(x, tembAct) // [N, Cout, H, W]
		if len(u.Attentions) > 0 {
			x = u.Attentions[i].forwardInPlace(x, ctx) // [N, Cout, H, W]
		}
	}
	for i := range u.Upsamplers {
		x = u.Upsamplers[i].Forward(x, oh, ow) // [N, Cout, oh, ow]
	}
	return x
}
