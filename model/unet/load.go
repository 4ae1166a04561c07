package unet

import (
	"fmt"
	"path/filepath"

	"github.com/osediff-go/osediff/checkpoint"
)

// WeightsFile is the diffusers file name of the UNet weights.
const WeightsFile = "diffusion_pytorch_model.safetensors"

// Load builds the UNet of a diffusers model folder's unet/ directory
// (config.json + diffusion_pytorch_model.safetensors) with every weight bound.
// LoRA, if any, is merged afterwards through checkpoint.Params.
func Load(dir string) (*UNet2DConditionModel, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	st, err := checkpoint.OpenSafetensors(filepath.Join(dir, WeightsFile))
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	defer st.Close()
	m := New(cfg)
	if _, err := checkpoint.Bind(m, st, checkpoint.BindOptions{}); err != nil {
		return nil, fmt.Errorf("unet: bind %s: %w", dir, err)
	}
	return m, nil
}
