package ram

import (
	"encoding/json"
	"fmt"
	"os"
)

// Config is the tagger's architecture, with the JSON fields of
// testdata/dape-tiny/config.json (unknown fields are ignored).
type Config struct {
	InputSize     int               `json:"input_size"`      // square tagger input, e.g. 384
	PatchSize     int               `json:"patch_size"`      // Swin patch (conv kernel and stride), 4
	WindowSize    int               `json:"window_size"`     // Swin attention window, 12
	EmbedDim      int               `json:"embed_dim"`       // Swin stage-0 width, 192
	Depths        []int             `json:"depths"`          // blocks per stage
	NumHeads      []int             `json:"num_heads"`       // attention heads per stage
	MLPRatio      float64           `json:"mlp_ratio"`       // Swin MLP hidden = dim·ratio
	VisionWidth   int               `json:"vision_width"`    // last-stage width = EmbedDim·2^(stages-1)
	LabelEmbedDim int               `json:"label_embed_dim"` // image_proj / label_embed width, 512
	TaggingHead   TaggingHeadConfig `json:"tagging_head"`
	NumClasses    int               `json:"num_classes"` // 4585
	LoRA          LoRAConfig        `json:"lora"`
}

// TaggingHeadConfig is the Query2Label BERT head (q2l_config.json).
type TaggingHeadConfig struct {
	HiddenSize        int     `json:"hidden_size"`
	NumAttentionHeads int     `json:"num_attention_heads"`
	IntermediateSize  int     `json:"intermediate_size"`
	NumHiddenLayers   int     `json:"num_hidden_layers"`
	LayerNormEps      float64 `json:"layer_norm_eps"`
}

// LoRAConfig is the loralib rank and alpha of the DAPE LoRA (scale alpha/r).
type LoRAConfig struct {
	R     int     `json:"r"`
	Alpha float64 `json:"alpha"`
}

// swinEps is the LayerNorm epsilon of every Swin LayerNorm (torch default).
const swinEps = 1e-5

// DefaultConfig is the real model: RAM Swin-L at 384 (ram/configs/swin/
// config_swinL_384.json), the q2l tagging head (ram/configs/q2l_config.json)
// and the DAPE LoRA (loralib r=8, default lora_alpha=1).
func DefaultConfig() Config {
	return Config{
		InputSize:     384,
		PatchSize:     4,
		WindowSize:    12,
		EmbedDim:      192,
		Depths:        []int{2, 2, 18, 2},
		NumHeads:      []int{6, 12, 24, 48},
		MLPRatio:      4,
		VisionWidth:   1536,
		LabelEmbedDim: 512,
		TaggingHead: TaggingHeadConfig{
			HiddenSize:        768,
			NumAttentionHeads: 4,
			IntermediateSize:  3072,
			NumHiddenLayers:   2,
			LayerNormEps:      1e-12,
		},
		NumClasses: 4585,
		LoRA:       LoRAConfig{R: 8, Alpha: 1},
	}
}

// LoadConfig reads a JSON configuration; absent fields keep DefaultConfig's
// values.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("ram: config: %w", err)
	}
	cfg := DefaultConfig()
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, fmt.Errorf("ram: config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("ram: config %s: %w", path, err)
	}
	return cfg, nil
}

// stage describes Swin stage i as the reference builds it.
type stage struct {
	Res    int // grid side R (tokens R×R)
	Dim    int // channels C
	Heads  int
	Depth  int
	Window int // effective window: min(window_size, R)
	Shift  int // shift of odd blocks (0 when R <= window_size)
}

// stages returns the per-stage geometry.
func (c Config) stages() []stage {
	out := make([]stage, len(c.Depths))
	res, dim := c.InputSize/c.PatchSize, c.EmbedDim
	for i := range c.Depths {
		w, s := c.WindowSize, c.WindowSize/2
		if res <= c.WindowSize {
			w, s = res, 0
		}
		out[i] = stage{Res: res, Dim: dim, Heads: c.NumHeads[i], Depth: c.Depths[i], Window: w, Shift: s}
		res, dim = res/2, dim*2
	}
	return out
}

// Validate checks that the configuration describes a model the reference
// could build (grids divisible by the window, widths divisible by heads).
func (c Config) Validate() error {
	switch {
	case c.InputSize <= 0 || c.PatchSize <= 0 || c.InputSize%c.PatchSize != 0:
		return fmt.Errorf("input_size %d must be a positive multiple of patch_size %d", c.InputSize, c.PatchSize)
	case c.WindowSize <= 0 || c.EmbedDim <= 0 || c.MLPRatio <= 0:
		return fmt.Errorf("window_size %d, embed_dim %d and mlp_ratio %g must be positive", c.WindowSize, c.EmbedDim, c.MLPRatio)
	case len(c.Depths) == 0 || len(c.Depths) != len(c.NumHeads):
		return fmt.Errorf("depths %v and num_heads %v must be non-empty and of equal length", c.Depths, c.NumHeads)
	case c.LabelEmbedDim <= 0 || c.NumClasses <= 0:
		return fmt.Errorf("label_embed_dim %d and num_classes %d must be positive", c.LabelEmbedDim, c.NumClasses)
	case c.LoRA.R <= 0:
		return fmt.Errorf("lora.r %d must be positive", c.LoRA.R)
	}
	h := c.TaggingHead
	if h.HiddenSize <= 0 || h.NumAttentionHeads <= 0 || h.HiddenSize%h.NumAttentionHeads != 0 ||
		h.IntermediateSize <= 0 || h.NumHiddenLayers <= 0 || h.LayerNormEps <= 0 {
		return fmt.Errorf("tagging_head %+v: sizes must be positive and hidden_size divisible by the heads", h)
	}
	st := c.stages()
	for i, s := range st {
		if s.Depth <= 0 || s.Heads <= 0 || s.Dim%s.Heads != 0 {
			return fmt.Errorf("stage %d: depth %d, heads %d must be positive and divide width %d", i, s.Depth, s.Heads, s.Dim)
		}
		if s.Res%s.Window != 0 {
			return fmt.Errorf("stage %d: grid %d is not a multiple of window %d", i, s.Res, s.Window)
		}
		if i < len(st)-1 && s.Res%2 != 0 {
			return fmt.Errorf("stage %d: grid %d is odd, patch merging needs an even grid", i, s.Res)
		}
		if int(float64(s.Dim)*c.MLPRatio) <= 0 {
			return fmt.Errorf("stage %d: MLP hidden width is zero", i)
		}
	}
	if last := st[len(st)-1].Dim; c.VisionWidth != last {
		return fmt.Errorf("vision_width %d, but the last Swin stage is %d wide", c.VisionWidth, last)
	}
	return nil
}
