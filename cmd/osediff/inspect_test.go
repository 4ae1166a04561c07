package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	for _, f := range []string{filepath.Join(tiny, "osediff_tiny.pkl"), filepath.Join(tiny, "model", "vae", "diffusion_pytorch_model.safetensors"),
		filepath.Join(dape, "weights", "dape_tiny.pth")} {
		out, err := cli(t, "inspect", f, "--json")
		if err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
		var js struct {
			Tensors []struct {
				Name  string `json:"name"`
				DType string `json:"dtype"`
				Shape []int  `json:"shape"`
			} `json:"tensors"`
		}
		if err := json.Unmarshal([]byte(out), &js); err != nil || len(js.Tensors) == 0 {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
		if js.Tensors[0].Name == "" || js.Tensors[0].DType == "" {
			t.Fatalf("%s: %+v", f, js.Tensors[0])
		}
	}
	out, err := cli(t, "inspect", "--model", filepath.Join(tiny, "model"), "--lora", filepath.Join(tiny, "osediff_tiny.pkl"))
	if err != nil || !strings.Contains(out, "257/257") || !strings.Contains(out, "31/31") {
		t.Fatalf("merge report: %v\n%s", err, out)
	}
	out, err = cli(t, "inspect", filepath.Join(tiny, "ref", "case_main_lq.png"))
	if err == nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("a PNG is no checkpoint: want one error line, got %v\n%s", err, out)
	}
}

func TestFetchOffline(t *testing.T) {
	// Nothing listens on this port: the command must fail with one clear line.
	out, err := cli(t, "fetch", "--hf-endpoint", "http://127.0.0.1:1", "--osediff-url", "http://127.0.0.1:1/osediff.pkl",
		"--ram-url", "http://127.0.0.1:1/ram.pth", "--dape-url", "http://127.0.0.1:1/DAPE.pth")
	if err == nil {
		t.Fatalf("fetch succeeded offline:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "offline") && !strings.Contains(last, "cannot reach") {
		t.Fatalf("no clear offline message:\n%s", out)
	}
}
