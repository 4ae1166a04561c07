package unet

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// UNet2DConditionModel is diffusers' UNet2DConditionModel (v0.25.0) as SD
// 2.x configures it. Field tags spell the diffusers checkpoint keys.
type UNet2DConditionModel struct {
	TimeProj      Timesteps
	TimeEmbedding *TimestepEmbedding       `weights:"time_embedding"`
	ConvIn        *nn.Conv2d               `weights:"conv_in"`
	DownBlocks    []DownBlock2D            `weights:"down_blocks"`
	MidBlock      *UNetMidBlock2DCrossAttn `weights:"mid_block"`
	UpBlocks      []UpBlock2D              `weights:"up_blocks"`
	ConvNormOut   *nn.GroupNorm            `weights:"conv_norm_out"`
	ConvOut       *nn.Conv2d               `weights:"conv_out"`
	Config        Config
}

// New builds an unbound model (tensor.Shaped placeholders) for cfg, which
// must pass Validate (LoadConfig checks it); New panics otherwise.
func New(cfg Config) *UNet2DConditionModel {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	nb := len(cfg.BlockOutChannels)
	boc := cfg.BlockOutChannels
	groups, eps := cfg.NormNumGroups, float32(cfg.NormEps)
	temb := cfg.timeEmbedDim()
	m := &UNet2DConditionModel{
		TimeProj:      Timesteps{NumChannels: boc[0], FlipSinToCos: cfg.FlipSinToCos, FreqShift: float32(cfg.FreqShift)},
		TimeEmbedding: NewTimestepEmbedding(boc[0], temb),
		ConvIn:        nn.NewConv2d(cfg.InChannels, boc[0], cfg.ConvInKernel, 1, (cfg.ConvInKernel-1)/2, true),
		ConvNormOut:   nn.NewGroupNorm(groups, boc[0], eps),
		ConvOut:       nn.NewConv2d(boc[0], cfg.OutChannels, cfg.ConvOutKernel, 1, (cfg.ConvOutKernel-1)/2, true),
		Config:        cfg,
	}
	heads := cfg.AttentionHeadDim // diffusers: num_attention_heads = attention_head_dim

	out := boc[0]
	for i, typ := range cfg.DownBlockTypes {
		in := out
		out = boc[i]
		b := DownBlock2D{Type: typ}
		for j := range cfg.LayersPerBlock.at(i) {
			rin := out
			if j == 0 {
				rin = in
			}
			b.Resnets = append(b.Resnets, *NewResnetBlock2D(rin, out, temb, groups, eps))
			if typ == "CrossAttnDownBlock2D" {
				b.Attentions = append(b.Attentions, *NewTransformer2DModel(out, heads.at(i), cfg.TransformerLayers.at(i), groups, cfg.CrossAttentionDim))
			}
		}
		if i < nb-1 {
			b.Downsamplers = []Downsample2D{*NewDownsample2D(out, cfg.DownsamplePadding)}
		}
		m.DownBlocks = append(m.DownBlocks, b)
	}

	last := boc[nb-1]
	m.MidBlock = &UNetMidBlock2DCrossAttn{Resnets: []ResnetBlock2D{*NewResnetBlock2D(last, last, temb, groups, eps)}}
	m.MidBlock.Attentions = []Transformer2DModel{*NewTransformer2DModel(last, heads.at(nb-1), cfg.TransformerLayers.at(nb-1), groups, cfg.CrossAttentionDim)}
	m.MidBlock.Resnets = append(m.MidBlock.Resnets, *NewResnetBlock2D(last, last, temb, groups, eps))

	out = boc[nb-1]
	for i, typ := range cfg.UpBlockTypes {
		r := nb - 1 - i // index into the (not reversed) per-block lists
		prev := out
		out = boc[r]
		in := boc[max(r-1, 0)]
		b := UpBlock2D{Type: typ}
		layers := cfg.LayersPerBlock.at(r) + 1
		for j := range layers {
			skip := out
			if j == layers-1 {
				skip = in
			}
			rin := out
			if j == 0 {
				rin = prev
			}
			b.Resnets = append(b.Resnets, *NewResnetBlock2D(rin+skip, out, temb, groups, eps))
			if typ == "CrossAttnUpBlock2D" {
				b.Attentions = append(b.Attentions, *NewTransformer2DModel(out, heads.at(r), cfg.TransformerLayers.at(r), groups, cfg.CrossAttentionDim))
			}
		}
		if i < nb-1 {
			b.Upsamplers = []Upsample2D{*NewUpsample2D(out)}
		}
		m.UpBlocks = append(m.UpBlocks, b)
	}
	return m
}

// Forward predicts the noise for sample [N, in_channels, h, w] at timestep
// (the same for every sample) given the text states encoderHiddenStates
// [N, L, cross_attention_dim]; it returns [N, out_channels, h, w].
func (m *UNet2DConditionModel) Forward(sample *tensor.Tensor, timestep float32, encoderHiddenStates *tensor.Tensor) *tensor.Tensor {
	cfg := m.Config
	if sample.Rank() != 4 || sample.Dim(1) != cfg.InChannels {
		panic(fmt.Sprintf("unet: sample %v, want [N, %d, h, w]", sample.Shape(), cfg.InChannels))
	}
	n := sample.Dim(0)
	ctx := encoderHiddenStates.Contiguous()
	if ctx.Rank() != 3 || ctx.Dim(0) != n || ctx.Dim(2) != cfg.CrossAttentionDim {
		panic(fmt.Sprintf("unet: encoder_hidden_states %v, want [%d, L, %d]", ctx.Shape(), n, cfg.CrossAttentionDim))
	}

	// time
	tembAct := m.TimeEmbedding.Forward(m.TimeProj.Forward(timestep, n)) // [N, T]
	kernels.SiLU(tembAct.Data(), tembAct.Data())                        // [N, T] SiLU(temb), shared by every resnet

	// down
	x := m.ConvIn.Forward(sample) // [N, C0, h, w]
	skips := []*tensor.Tensor{x}  // every skip connection, in order
	for i := range m.DownBlocks {
		var s []*tensor.Tensor
		x, s = m.DownBlocks[i].Forward(x, tembAct, ctx) // [N, C_i, h_i, w_i]
		skips = append(skips, s...)
	}

	// mid
	x = m.MidBlock.Forward(x, tembAct, ctx) // [N, C_last, h_last, w_last]

	// up
	for i := range m.UpBlocks {
		b := &m.UpBlocks[i]
		k := len(skips) - len(b.Resnets)
		res := skips[k:]
		skips = skips[:k]
		oh, ow := 0, 0
		if len(b.Upsamplers) > 0 { // the next block's skips set the size
			next := skips[len(skips)-1]
			oh, ow = next.Dim(2), next.Dim(3)
		}
		x = b.Forward(x, res, tembAct, ctx, oh, ow) // [N, C, oh, ow]
		clear(res)                                  // drop the consumed skips early
	}

	// out
	return m.ConvOut.ForwardEx(x, m.ConvNormOut.Affine(x, true), nil, nil) // [N, out_channels, h, w] conv_out(SiLU(GroupNorm(x)))
}
