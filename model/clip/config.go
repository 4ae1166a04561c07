package clip

import (
	"errors"
	"fmt"

	"github.com/osediff-go/osediff/checkpoint"
)

// ErrConfig reports a config.json this package cannot build.
var ErrConfig = errors.New("clip: unsupported config")

// Config mirrors the fields of transformers' CLIPTextConfig
// (text_encoder/config.json) that CLIPTextModel uses.
type Config struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"` // "gelu" (exact erf) or "quick_gelu"
	LayerNormEps          float64 `json:"layer_norm_eps"`
	ProjectionDim         int     `json:"projection_dim"` // CLIPTextModelWithProjection only; unused here
}

// SD21BaseConfig is the text encoder of stabilityai/stable-diffusion-2-1-base
// (OpenCLIP ViT-H/14 text tower as transformers' CLIPTextModel).
func SD21BaseConfig() Config {
	return Config{
		VocabSize:             49408,
		HiddenSize:            1024,
		IntermediateSize:      4096,
		NumHiddenLayers:       23,
		NumAttentionHeads:     16,
		MaxPositionEmbeddings: 77,
		HiddenAct:             "gelu",
		LayerNormEps:          1e-5,
		ProjectionDim:         512,
	}
}

// LoadConfig reads a text_encoder/config.json. Absent fields take
// CLIPTextConfig's defaults.
func LoadConfig(path string) (Config, error) {
	cfg := Config{ // transformers 4.28 CLIPTextConfig defaults
		VocabSize:             49408,
		HiddenSize:            512,
		IntermediateSize:      2048,
		NumHiddenLayers:       12,
		NumAttentionHeads:     8,
		MaxPositionEmbeddings: 77,
		HiddenAct:             "quick_gelu",
		LayerNormEps:          1e-5,
		ProjectionDim:         512,
	}
	if err := checkpoint.LoadJSON(path, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports a config New cannot build.
func (c Config) Validate() error {
	switch {
	case c.VocabSize <= 0, c.HiddenSize <= 0, c.IntermediateSize <= 0, c.NumHiddenLayers < 0,
		c.NumAttentionHeads <= 0, c.MaxPositionEmbeddings <= 0:
		return fmt.Errorf("%w: sizes must be positive: %+v", ErrConfig, c)
	case c.HiddenSize%c.NumAttentionHeads != 0:
		return fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d", ErrConfig, c.HiddenSize, c.NumAttentionHeads)
	case c.HiddenAct != "gelu" && c.HiddenAct != "quick_gelu":
		return fmt.Errorf("%w: hidden_act %q (want gelu or quick_gelu)", ErrConfig, c.HiddenAct)
	case !(c.LayerNormEps > 0):
		return fmt.Errorf("%w: layer_norm_eps %v", ErrConfig, c.LayerNormEps)
	}
	return nil
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }

// FLOPs counts 2 x multiply-adds of every Linear and of both attention
// matrix products (the full L x L scores, as torch's bmm computes them) for
// one forward of seqLen tokens. Embedding look-ups, norms, activations and
// softmax are not counted.
func FLOPs(cfg Config, seqLen int) float64 {
	l, d, m := float64(seqLen), float64(cfg.HiddenSize), float64(cfg.IntermediateSize)
	proj := 2 * l * d * d * 4 // q, k, v, out_proj
	mlp := 2 * l * d * m * 2  // fc1, fc2
	attn := 2 * l * l * d * 2 // Q·Kᵀ and P·V over all heads
	return float64(cfg.NumHiddenLayers) * (proj + mlp + attn)
}
