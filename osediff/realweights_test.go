package osediff

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRealWeights runs the pipeline on the official weights when
// OSEDIFF_WEIGHTS names a folder holding model/ (SD 2.1-base, diffusers
// layout) and osediff.pkl, and optionally ram_swin_large_14m.pth and DAPE.pth
// (then DAPE reads the tags). The layout of `osediff fetch` also works:
// models/stable-diffusion-2-1-base/ and weights/.
func TestRealWeights(t *testing.T) {
	root := os.Getenv("OSEDIFF_WEIGHTS")
	if root == "" {
		t.Skip("OSEDIFF_WEIGHTS is not set: no real weights here")
	}
	pick := func(cands ...string) string {
		for _, c := range cands {
			p := filepath.Join(root, c)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		return ""
	}
	o := LoadOptions{
		Model: pick("model", "models/stable-diffusion-2-1-base"),
		LoRA:  pick("osediff.pkl", "weights/osediff.pkl"),
		RAM:   pick("ram_swin_large_14m.pth", "weights/ram_swin_large_14m.pth"),
		DAPE:  pick("DAPE.pth", "weights/DAPE.pth"),
	}
	if o.Model == "" || o.LoRA == "" {
		t.Fatalf("OSEDIFF_WEIGHTS=%s lacks model/ or osediff.pkl", root)
	}
	p, err := Load(o)
	if err != nil {
		t.Fatal(err)
	}
	lq := readPNG(t, filepath.Join(tinyDir, "ref", "case_main_lq.png"))
	opts := Options{Scale: 4}
	if p.Tagger == nil {
		tags := "building, city, sky, street, tree"
		opts.Tags = &tags
	}
	res, err := p.Upscale(context.Background(), lq, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Image.W != 4*lq.W || res.Image.H != 4*lq.H {
		t.Fatalf("output %dx%d", res.Image.W, res.Image.H)
	}
	t.Logf("prompt %q, LoRA %s", res.Prompt, p.LoRAReport)
}
