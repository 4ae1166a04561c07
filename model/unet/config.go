package unet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// ErrConfig reports a config.json this package cannot build.
var ErrConfig = errors.New("unet: unsupported config")

// IntList is a config value that diffusers accepts either as one int (the
// same for every block) or as a per-block list; null leaves it empty.
type IntList []int

// UnmarshalJSON accepts an int, a list of ints or null.
func (l *IntList) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*l = nil
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("unet: want an int or a list of ints, got %s", b)
	}
	*l = many
	return nil
}

// at returns entry i of a per-block list, or the single value of a scalar.
func (l IntList) at(i int) int {
	if len(l) == 1 {
		return l[0]
	}
	return l[i]
}

// Config mirrors the fields of diffusers' unet/config.json that the SD 2.x
// UNet2DConditionModel uses. Fields for features this package does not
// implement are read only so that LoadConfig can reject configs that set them.
type Config struct {
	InChannels            int       `json:"in_channels"`
	OutChannels           int       `json:"out_channels"`
	DownBlockTypes        []string  `json:"down_block_types"`
	MidBlockType          string    `json:"mid_block_type"`
	UpBlockTypes          []string  `json:"up_block_types"`
	BlockOutChannels      []int     `json:"block_out_channels"`
	LayersPerBlock        IntList   `json:"layers_per_block"`
	DownsamplePadding     int       `json:"downsample_padding"`
	MidBlockScaleFactor   float64   `json:"mid_block_scale_factor"`
	ActFn                 string    `json:"act_fn"`
	NormNumGroups         int       `json:"norm_num_groups"`
	NormEps               float64   `json:"norm_eps"`
	CrossAttentionDim     int       `json:"cross_attention_dim"`
	TransformerLayers     IntList   `json:"transformer_layers_per_block"`
	ReverseTransformer    []IntList `json:"reverse_transformer_layers_per_block"`
	AttentionHeadDim      IntList   `json:"attention_head_dim"` // number of heads per block (diffusers' naming)
	NumAttentionHeads     IntList   `json:"num_attention_heads"`
	UseLinearProjection   bool      `json:"use_linear_projection"`
	OnlyCrossAttention    any       `json:"only_cross_attention"`
	DualCrossAttention    bool      `json:"dual_cross_attention"`
	UpcastAttention       bool      `json:"upcast_attention"` // fp16 only; no effect in float32
	FlipSinToCos          bool      `json:"flip_sin_to_cos"`
	FreqShift             float64   `json:"freq_shift"`
	TimeEmbeddingType     string    `json:"time_embedding_type"`
	TimeEmbeddingDim      *int      `json:"time_embedding_dim"`
	TimeEmbeddingActFn    *string   `json:"time_embedding_act_fn"`
	TimestepPostAct       *string   `json:"timestep_post_act"`
	TimeCondProjDim       *int      `json:"time_cond_proj_dim"`
	ConvInKernel          int       `json:"conv_in_kernel"`
	ConvOutKernel         int       `json:"conv_out_kernel"`
	CenterInputSample     bool      `json:"center_input_sample"`
	ResnetTimeScaleShift  string    `json:"resnet_time_scale_shift"`
	ResnetSkipTimeAct     bool      `json:"resnet_skip_time_act"`
	ResnetOutScaleFactor  float64   `json:"resnet_out_scale_factor"`
	ClassEmbedType        *string   `json:"class_embed_type"`
	NumClassEmbeds        *int      `json:"num_class_embeds"`
	AdditionEmbedType     *string   `json:"addition_embed_type"`
	EncoderHidDim         *int      `json:"encoder_hid_dim"`
	EncoderHidDimType     *string   `json:"encoder_hid_dim_type"`
	AttentionType         string    `json:"attention_type"`
	CrossAttentionNorm    *string   `json:"cross_attention_norm"`
	MidBlockOnlyCrossAttn *bool     `json:"mid_block_only_cross_attention"`
	SampleSize            int       `json:"sample_size"`
}

// defaults returns the UNet2DConditionModel __init__ defaults that SD 2.x
// config files may leave out.
func defaults() Config {
	return Config{
		InChannels:           4,
		OutChannels:          4,
		DownBlockTypes:       []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		MidBlockType:         "UNetMidBlock2DCrossAttn",
		UpBlockTypes:         []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
		BlockOutChannels:     []int{320, 640, 1280, 1280},
		LayersPerBlock:       IntList{2},
		DownsamplePadding:    1,
		MidBlockScaleFactor:  1,
		ActFn:                "silu",
		NormNumGroups:        32,
		NormEps:              1e-5,
		CrossAttentionDim:    1280,
		TransformerLayers:    IntList{1},
		AttentionHeadDim:     IntList{8},
		FlipSinToCos:         true,
		FreqShift:            0,
		TimeEmbeddingType:    "positional",
		ConvInKernel:         3,
		ConvOutKernel:        3,
		ResnetTimeScaleShift: "default",
		ResnetOutScaleFactor: 1,
		AttentionType:        "default",
		SampleSize:           64,
	}
}

// SD21BaseConfig is stabilityai/stable-diffusion-2-1-base's unet/config.json.
func SD21BaseConfig() Config {
	c := defaults()
	c.AttentionHeadDim = IntList{5, 10, 20, 20}
	c.CrossAttentionDim = 1024
	c.UseLinearProjection = true
	c.SampleSize = 64
	return c
}

// LoadConfig reads unet/config.json and checks that this package implements
// every feature it asks for.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("unet: config: %w", err)
	}
	c := defaults()
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("unet: config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w (%s)", err, path)
	}
	return c, nil
}

// Validate reports the first setting New cannot build.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	nb := len(c.BlockOutChannels)
	switch {
	case nb == 0:
		return bad("block_out_channels is empty")
	case len(c.DownBlockTypes) != nb || len(c.UpBlockTypes) != nb:
		return bad("%d down and %d up block types for %d block_out_channels", len(c.DownBlockTypes), len(c.UpBlockTypes), nb)
	case c.InChannels <= 0 || c.OutChannels <= 0:
		return bad("in_channels %d, out_channels %d", c.InChannels, c.OutChannels)
	case c.NumAttentionHeads != nil:
		return bad("num_attention_heads is not supported by UNet2DConditionModel v0.25 (use attention_head_dim)")
	case c.MidBlockType != "UNetMidBlock2DCrossAttn":
		return bad("mid_block_type %q", c.MidBlockType)
	case c.ActFn != "silu":
		return bad("act_fn %q", c.ActFn)
	case c.TimeEmbeddingType != "positional":
		return bad("time_embedding_type %q", c.TimeEmbeddingType)
	case c.ResnetTimeScaleShift != "default":
		return bad("resnet_time_scale_shift %q", c.ResnetTimeScaleShift)
	case c.ResnetSkipTimeAct:
		return bad("resnet_skip_time_act")
	case c.ResnetOutScaleFactor != 1 || c.MidBlockScaleFactor != 1:
		return bad("resnet_out_scale_factor %v, mid_block_scale_factor %v", c.ResnetOutScaleFactor, c.MidBlockScaleFactor)
	case c.ClassEmbedType != nil || c.NumClassEmbeds != nil:
		return bad("class embeddings")
	case c.AdditionEmbedType != nil || c.EncoderHidDim != nil || c.EncoderHidDimType != nil:
		return bad("addition_embed_type / encoder_hid_dim / encoder_hid_dim_type")
	case c.TimeEmbeddingActFn != nil || c.TimestepPostAct != nil || c.TimeCondProjDim != nil:
		return bad("time_embedding_act_fn / timestep_post_act / time_cond_proj_dim")
	case c.AttentionType != "default":
		return bad("attention_type %q", c.AttentionType)
	case c.CrossAttentionNorm != nil:
		return bad("cross_attention_norm")
	case c.DualCrossAttention:
		return bad("dual_cross_attention")
	case !c.UseLinearProjection:
		return bad("use_linear_projection false (1x1 conv projections) is not implemented")
	case c.CenterInputSample:
		return bad("center_input_sample")
	case c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0:
		return bad("even conv_in_kernel/conv_out_kernel")
	case c.NormNumGroups <= 0 || c.CrossAttentionDim <= 0:
		return bad("norm_num_groups %d, cross_attention_dim %d", c.NormNumGroups, c.CrossAttentionDim)
	case c.ReverseTransformer != nil:
		return bad("reverse_transformer_layers_per_block")
	}
	if oc, ok := c.OnlyCrossAttention.(bool); c.OnlyCrossAttention != nil && (!ok || oc) {
		return bad("only_cross_attention %v", c.OnlyCrossAttention)
	}
	if c.MidBlockOnlyCrossAttn != nil && *c.MidBlockOnlyCrossAttn {
		return bad("mid_block_only_cross_attention")
	}
	for name, l := range map[string]IntList{"layers_per_block": c.LayersPerBlock, "attention_head_dim": c.AttentionHeadDim, "transformer_layers_per_block": c.TransformerLayers} {
		if len(l) != 1 && len(l) != nb {
			return bad("%s has %d entries for %d blocks", name, len(l), nb)
		}
		for _, v := range l {
			if v <= 0 {
				return bad("%s %v", name, l)
			}
		}
	}
	for i, ch := range c.BlockOutChannels {
		if ch <= 0 || ch%c.NormNumGroups != 0 {
			return bad("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
		if ch%c.AttentionHeadDim.at(i) != 0 {
			return bad("block_out_channels[%d] = %d is not divisible by %d heads", i, ch, c.AttentionHeadDim.at(i))
		}
		if t := c.DownBlockTypes[i]; t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return bad("down block type %q", t)
		}
		if t := c.UpBlockTypes[i]; t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
			return bad("up block type %q", t)
		}
	}
	return nil
}

// timeEmbedDim is time_embedding_dim or 4·block_out_channels[0].
func (c Config) timeEmbedDim() int {
	if c.TimeEmbeddingDim != nil {
		return *c.TimeEmbeddingDim
	}
	return 4 * c.BlockOutChannels[0]
}
