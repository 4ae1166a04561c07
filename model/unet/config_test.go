package unet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

func TestLoadConfigTiny(t *testing.T) {
	cfg, err := LoadConfig(tinyDir + "model/unet/config.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"block_out_channels", len(cfg.BlockOutChannels), 4},
		{"heads[1]", cfg.AttentionHeadDim.at(1), 4},
		{"norm_num_groups", cfg.NormNumGroups, 8},
		{"cross_attention_dim", cfg.CrossAttentionDim, 32},
		{"layers_per_block", cfg.LayersPerBlock.at(3), 2},
		{"transformer_layers_per_block", cfg.TransformerLayers.at(0), 1},
		{"time embed dim", cfg.timeEmbedDim(), 64},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadConfigRejects(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, json string }{
		{"num_attention_heads", `{"num_attention_heads": 8}`},
		{"class_embed_type", `{"class_embed_type": "timestep"}`},
		{"conv projections", `{"use_linear_projection": false}`},
		{"block types", `{"use_linear_projection": true, "down_block_types": ["DownBlock2D"]}`},
		{"heads", `{"use_linear_projection": true, "attention_head_dim": [3, 10, 20, 20]}`},
		{"scale shift", `{"use_linear_projection": true, "resnet_time_scale_shift": "scale_shift"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "config.json")
			if err := os.WriteFile(p, []byte(c.json), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig(%s) = %v, want ErrConfig", c.json, err)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("LoadConfig of a missing file: no error")
	}
}

// TestSD21Structure checks the SD 2.1-base skeleton against the reference
// model: 865,910,724 parameters (../shared/design/peer-bench.md) and the
// shapes of a few keys.
func TestSD21Structure(t *testing.T) {
	params := checkpoint.Params(New(SD21BaseConfig()))
	n := 0
	for _, p := range params {
		n += p.Numel()
	}
	if n != 865910724 {
		t.Errorf("SD 2.1-base UNet has %d parameters, want 865910724", n)
	}
	for _, c := range []struct {
		key   string
		shape []int
	}{
		{"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", []int{640, 1024}},
		{"down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight", []int{10240, 1280}},
		{"up_blocks.1.resnets.2.conv_shortcut.weight", []int{1280, 1920, 1, 1}},
		{"up_blocks.3.resnets.0.conv1.weight", []int{320, 960, 3, 3}},
		{"mid_block.attentions.0.proj_in.weight", []int{1280, 1280}},
		{"time_embedding.linear_1.weight", []int{1280, 320}},
	} {
		p, ok := params[c.key]
		if !ok {
			t.Errorf("no %s", c.key)
			continue
		}
		if got := p.Shape(); len(got) != len(c.shape) || fmtShape(got) != fmtShape(c.shape) {
			t.Errorf("%s: shape %v, want %v", c.key, got, c.shape)
		}
	}
}

func fmtShape(s []int) string { return fmt.Sprint(s) }

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("Load of an empty folder: no error")
	}
	// A config whose weights file lacks tensors: one bind error, no panic.
	cfg, err := os.ReadFile(tinyDir + "model/unet/config.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	w := map[string]*tensor.Tensor{"conv_in.weight": tensor.New(2, 2)}
	if err := checkpoint.SaveSafetensors(filepath.Join(dir, WeightsFile), w, "F32", nil); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), "conv_in.weight") || !strings.Contains(err.Error(), "conv_out.weight") {
		t.Fatalf("Load with a wrong weights file: %v, want one error naming the mis-shaped and the missing tensors", err)
	}
}
