package vae

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/osediff-go/osediff/checkpoint"
)

// WeightsFile is the diffusers name of the VAE weights in its folder.
const WeightsFile = "diffusion_pytorch_model.safetensors"

// Load builds the AutoencoderKL of a diffusers vae/ folder: config.json and
// diffusion_pytorch_model.safetensors.
func Load(dir string) (*AutoencoderKL, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	st, err := checkpoint.OpenSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, fmt.Errorf("vae: %w", err)
	}
	defer st.Close()
	m := New(cfg)
	if err := m.Bind(st); err != nil {
		return nil, err
	}
	return m, nil
}

// Bind fills the model's weights from src (diffusers key names; the
// pre-0.14 mid-block attention names query/key/value/proj_attn that some
// published SD checkpoints still use are accepted too).
func (m *AutoencoderKL) Bind(src checkpoint.Source) error {
	if _, err := checkpoint.Bind(m, src, checkpoint.BindOptions{Rename: LegacyRename}); err != nil {
		return fmt.Errorf("vae: %w", err)
	}
	return nil
}

// LegacyRename maps the deprecated attention-block key names that diffusers
// converts on load (query, key, value, proj_attn) to the current ones (to_q,
// to_k, to_v, to_out.0); other keys are returned unchanged.
func LegacyRename(key string) string {
	i := strings.Index(key, ".attentions.")
	if i < 0 {
		return key
	}
	for old, repl := range map[string]string{
		".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0.",
	} {
		if j := strings.Index(key[i:], old); j >= 0 {
			return key[:i+j] + repl + key[i+j+len(old):]
		}
	}
	return key
}
