package vae

import (
	"encoding/json"
	"fmt"
	"os"
)

// Config mirrors the fields of diffusers' AutoencoderKL config.json that
// shape the network. Fields absent from the file keep the AutoencoderKL
// constructor defaults (see DefaultConfig).
type Config struct {
	InChannels       int      `json:"in_channels"`
	OutChannels      int      `json:"out_channels"`
	DownBlockTypes   []string `json:"down_block_types"`
	UpBlockTypes     []string `json:"up_block_types"`
	BlockOutChannels []int    `json:"block_out_channels"`
	LayersPerBlock   int      `json:"layers_per_block"`
	ActFn            string   `json:"act_fn"`
	LatentChannels   int      `json:"latent_channels"`
	NormNumGroups    int      `json:"norm_num_groups"`
	SampleSize       int      `json:"sample_size"`
	ScalingFactor    float64  `json:"scaling_factor"`
	ForceUpcast      bool     `json:"force_upcast"`
}

// normEps is the GroupNorm epsilon diffusers hard-codes for every VAE norm.
const normEps = 1e-6

// DefaultConfig is AutoencoderKL's constructor defaults (diffusers v0.25.0).
func DefaultConfig() Config {
	return Config{
		InChannels:       3,
		OutChannels:      3,
		DownBlockTypes:   []string{"DownEncoderBlock2D"},
		UpBlockTypes:     []string{"UpDecoderBlock2D"},
		BlockOutChannels: []int{64},
		LayersPerBlock:   1,
		ActFn:            "silu",
		LatentChannels:   4,
		NormNumGroups:    32,
		SampleSize:       32,
		ScalingFactor:    0.18215,
		ForceUpcast:      true,
	}
}

// SD21BaseConfig is the vae/config.json of stabilityai/stable-diffusion-2-1-base
// (no scaling_factor in the file, so the default 0.18215 applies).
func SD21BaseConfig() Config {
	c := DefaultConfig()
	c.BlockOutChannels = []int{128, 256, 512, 512}
	c.DownBlockTypes = []string{"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}
	c.UpBlockTypes = []string{"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}
	c.LayersPerBlock = 2
	c.SampleSize = 768
	return c
}

// LoadConfig reads a diffusers vae/config.json and validates it.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("vae: %w", err)
	}
	c := DefaultConfig()
	// Lists replace the defaults instead of merging into them.
	c.DownBlockTypes, c.UpBlockTypes, c.BlockOutChannels = nil, nil, nil
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("vae: %s: %w", path, err)
	}
	d := DefaultConfig()
	if c.DownBlockTypes == nil {
		c.DownBlockTypes = d.DownBlockTypes
	}
	if c.UpBlockTypes == nil {
		c.UpBlockTypes = d.UpBlockTypes
	}
	if c.BlockOutChannels == nil {
		c.BlockOutChannels = d.BlockOutChannels
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("vae: %s: %w", path, err)
	}
	return c, nil
}

// Validate reports a configuration this package cannot build.
func (c Config) Validate() error {
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return fmt.Errorf("block_out_channels is empty")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("%d down_block_types and %d up_block_types for %d block_out_channels",
			len(c.DownBlockTypes), len(c.UpBlockTypes), n)
	case c.InChannels <= 0 || c.OutChannels <= 0 || c.LatentChannels <= 0:
		return fmt.Errorf("in_channels %d, out_channels %d, latent_channels %d must be positive",
			c.InChannels, c.OutChannels, c.LatentChannels)
	case c.LayersPerBlock <= 0:
		return fmt.Errorf("layers_per_block %d must be positive", c.LayersPerBlock)
	case c.NormNumGroups <= 0:
		return fmt.Errorf("norm_num_groups %d must be positive", c.NormNumGroups)
	case c.ActFn != "silu":
		return fmt.Errorf("act_fn %q is not supported (only silu)", c.ActFn)
	case c.ScalingFactor <= 0:
		return fmt.Errorf("scaling_factor %v must be positive", c.ScalingFactor)
	}
	for i, t := range c.DownBlockTypes {
		if t != "DownEncoderBlock2D" {
			return fmt.Errorf("down_block_types[%d] = %q is not supported (only DownEncoderBlock2D)", i, t)
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "UpDecoderBlock2D" {
			return fmt.Errorf("up_block_types[%d] = %q is not supported (only UpDecoderBlock2D)", i, t)
		}
	}
	for i, ch := range c.BlockOutChannels {
		if ch <= 0 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d",
				i, ch, c.NormNumGroups)
		}
	}
	return nil
}

// DownFactor is the spatial ratio between image and latent (8 for SD).
func (c Config) DownFactor() int { return 1 << (len(c.BlockOutChannels) - 1) }
