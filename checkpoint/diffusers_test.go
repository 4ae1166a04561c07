package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const tinyModel = "../testdata/osediff-tiny/model"

func TestLoadModelIndex(t *testing.T) {
	mi, err := LoadModelIndex(tinyModel)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"scheduler": {"diffusers", "PNDMScheduler"}, "text_encoder": {"transformers", "CLIPTextModel"},
		"tokenizer": {"transformers", "CLIPTokenizer"}, "unet": {"diffusers", "UNet2DConditionModel"},
		"vae": {"diffusers", "AutoencoderKL"},
	}
	if mi.ClassName != "StableDiffusionPipeline" || !reflect.DeepEqual(mi.Components, want) {
		t.Fatalf("%+v", mi)
	}
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestComponentWeights(t *testing.T) {
	dir := t.TempDir()
	touch(t, filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
	touch(t, filepath.Join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"))
	touch(t, filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"))
	touch(t, filepath.Join(dir, "text_encoder", "model.fp16.safetensors"))
	touch(t, filepath.Join(dir, "old", "pytorch_model.bin"))
	touch(t, filepath.Join(dir, "sharded", "model.safetensors.index.json"))
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	tests := []struct {
		component string
		fp16      bool
		want      string // file name, or error text
		err       error
	}{
		{"unet", true, "diffusion_pytorch_model.fp16.safetensors", nil},
		{"unet", false, "diffusion_pytorch_model.safetensors", nil},
		{"vae", true, "diffusion_pytorch_model.safetensors", nil},
		{"text_encoder", false, "model.fp16.safetensors", nil},
		{"old", true, "pytorch_model.bin", nil},
		{"sharded", true, "sharded weights", nil},
		{"empty", true, "no weights file", ErrModelNotFound},
		{"missing", true, `component "missing"`, ErrModelNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.component, func(t *testing.T) {
			p, err := ComponentWeights(dir, tc.component, tc.fp16)
			if tc.err != nil || strings.Contains(tc.want, " ") {
				if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.err != nil && !errors.Is(err, tc.err)) {
					t.Fatalf("got %q, %v; want an error with %q", p, err, tc.want)
				}
				return
			}
			if err != nil || filepath.Base(p) != tc.want {
				t.Fatalf("got %q, %v; want %s", p, err, tc.want)
			}
		})
	}
	p, err := ComponentWeights(tinyModel, "unet", true)
	if err != nil || filepath.Base(p) != "diffusion_pytorch_model.safetensors" {
		t.Fatalf("tiny unet: %q %v", p, err)
	}
}

func TestResolveModel(t *testing.T) {
	hub := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hub)
	t.Setenv("HF_HOME", filepath.Join(hub, "nothing"))
	repo := filepath.Join(hub, "models--stabilityai--stable-diffusion-2-1-base")
	for _, rev := range []string{"aaa", "bbb"} {
		touch(t, filepath.Join(repo, "snapshots", rev, "model_index.json"))
	}
	touch(t, filepath.Join(hub, "models--org--norefs", "snapshots", "only", "model_index.json"))
	touch(t, filepath.Join(repo, "refs", "main"))
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte("aaa\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want string
		err      bool
	}{
		{tinyModel, tinyModel, false},
		{"stabilityai/stable-diffusion-2-1-base", filepath.Join(repo, "snapshots", "aaa"), false},
		{"org/norefs", filepath.Join(hub, "models--org--norefs", "snapshots", "only"), false},
		{"org/absent", "", true},
		{"not-a-repo-id", "", true},
		{"../etc", "", true},
		{filepath.Join(tinyModel, "model_index.json"), "", true},
	}
	for _, tc := range tests {
		got, err := ResolveModel(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ResolveModel(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func TestInspect(t *testing.T) {
	tests := []struct {
		path string
		n    int
	}{
		{"../testdata/osediff-tiny/lora/state_dict_vae.safetensors", 62},
		{osediffPkl, 578},
		{dapePth, 56},
	}
	for _, tc := range tests {
		infos, err := Inspect(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != tc.n {
			t.Fatalf("%s: %d tensors, want %d", tc.path, len(infos), tc.n)
		}
		for i := 1; i < len(infos); i++ {
			if infos[i-1].Name >= infos[i].Name {
				t.Fatalf("%s: not sorted", tc.path)
			}
		}
		if infos[0].DType != F32 || len(infos[0].Shape) == 0 {
			t.Fatalf("%s: %+v", tc.path, infos[0])
		}
	}
	if _, err := Inspect("../testdata/osediff-tiny/README.md"); err == nil {
		t.Fatal("README inspected")
	}
}
