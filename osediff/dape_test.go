package osediff

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

const dapeDir = "../testdata/dape-tiny"

// TestPipelineRunsDAPE: without tags, the pipeline runs DAPE on the image
// after its ×scale resizes, and the prompt is the reference's, for the
// tagger with the DAPE LoRA and without it.
func TestPipelineRunsDAPE(t *testing.T) {
	var prompts map[string]map[string]struct {
		Prompt string `json:"prompt_empty_user_prompt"`
		User   string `json:"prompt_with_user_prompt"`
	}
	b, err := os.ReadFile(filepath.Join(dapeDir, "ref", "prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &prompts); err != nil {
		t.Fatal(err)
	}
	for _, variant := range []string{"dape", "plain"} {
		t.Run(variant, func(t *testing.T) {
			o := LoadOptions{Model: filepath.Join(tinyDir, "model"), LoRA: filepath.Join(tinyDir, "osediff_tiny.pkl"),
				RAM: filepath.Join(dapeDir, "weights", "ram_tiny.pth"), TaggerConfig: filepath.Join(dapeDir, "config.json")}
			if variant == "dape" {
				o.DAPE = filepath.Join(dapeDir, "weights", "dape_tiny.pth")
			}
			p, err := Load(o)
			if err != nil {
				t.Fatal(err)
			}
			lr := readPNG(t, filepath.Join(dapeDir, "ref", "case_street_lr.png"))
			var stages []string
			res, err := p.Upscale(context.Background(), lr, Options{Prompt: "clean, high-resolution, 8k",
				Progress: func(pr Progress) {
					if len(stages) == 0 || stages[len(stages)-1] != pr.Stage {
						stages = append(stages, pr.Stage)
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			if want := prompts["street"][variant].User; res.Prompt != want {
				t.Fatalf("prompt %q, want %q", res.Prompt, want)
			}
			if res.Image.W != 4*lr.W || res.Image.H != 4*lr.H {
				t.Fatalf("output %dx%d", res.Image.W, res.Image.H)
			}
			if stages[1] != "tagger" {
				t.Fatalf("stages %v: the tagger did not run", stages)
			}
		})
	}
}
