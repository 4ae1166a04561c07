package ram

import (
	"fmt"
	"log/slog"

	"github.com/osediff-go/osediff/checkpoint"
)

// Load builds the tagger for cfg from the RAM checkpoint at ramPath
// (torch.save({'model': state_dict}), the format of ram_swin_large_14m.pth)
// and, unless dapePath is "", the DAPE LoRA file (torch.save of the flat
// dict of 'lora_' tensors, DAPE.pth), merged into the weights.
func Load(ramPath, dapePath string, cfg Config) (*Tagger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ram: %w", err)
	}
	base, err := checkpoint.OpenTorch(ramPath)
	if err != nil {
		return nil, fmt.Errorf("ram: %w", err)
	}
	defer base.Close()
	src, err := base.Source("model")
	if err != nil {
		return nil, fmt.Errorf("ram: %s: %w", ramPath, err)
	}
	var lora checkpoint.Source
	if dapePath != "" {
		dape, err := checkpoint.OpenTorch(dapePath)
		if err != nil {
			return nil, fmt.Errorf("ram: %w", err)
		}
		defer dape.Close()
		if lora, err = dape.Source(); err != nil {
			return nil, fmt.Errorf("ram: %s: %w", dapePath, err)
		}
	}
	return loadSources(src, lora, cfg)
}

// loadSources binds the model from the RAM state dict src, merges the LoRA
// tensors of src and then of lora (nil for none), and makes the Tagger.
func loadSources(src, lora checkpoint.Source, cfg Config) (*Tagger, error) {
	m := NewRAMLora(cfg)
	rep, err := checkpoint.Bind(m, src, checkpoint.BindOptions{Ignore: ramIgnore, Rename: renameKey})
	if err != nil {
		return nil, fmt.Errorf("ram: RAM checkpoint: %w", err)
	}
	pairs := map[string]*loraPair{}
	if err := collectLoRA(pairs, src, false, "RAM checkpoint"); err != nil {
		return nil, err
	}
	if lora != nil {
		if err := collectLoRA(pairs, lora, true, "DAPE file"); err != nil {
			return nil, err
		}
	}
	merged, err := mergeLoRA(m, cfg, pairs)
	if err != nil {
		return nil, err
	}
	slog.Debug("ram: loaded", "bound", rep.Bound, "ignored", len(rep.Ignored), "lora_merged", merged, "lora_pairs", len(pairs))
	return NewTagger(m, cfg)
}
