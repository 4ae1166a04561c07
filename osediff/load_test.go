package osediff

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

// TestLoadFP16AndLegacyNames loads the tiny model as published SD 2.1
// checkpoints ship: weights in the .fp16 variant files, and the VAE's
// mid-block attention under the pre-0.14 names (query/key/value/proj_attn).
func TestLoadFP16AndLegacyNames(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(tinyDir, "model")
	renames := 0
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !strings.HasSuffix(p, ".safetensors") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
		st, err := checkpoint.OpenSafetensors(p)
		if err != nil {
			return err
		}
		defer st.Close()
		m := map[string]*tensor.Tensor{}
		for _, k := range st.Keys() {
			v, err := checkpoint.ReadTensor(st, k)
			if err != nil {
				return err
			}
			if strings.Contains(rel, "vae") && strings.Contains(k, ".attentions.") {
				for old, legacy := range map[string]string{".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."} {
					if strings.Contains(k, old) {
						k = strings.Replace(k, old, legacy, 1)
						renames++
						break
					}
				}
			}
			m[k] = v
		}
		return checkpoint.SaveSafetensors(strings.TrimSuffix(dst, ".safetensors")+".fp16.safetensors", m, "F16", nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if renames == 0 {
		t.Fatal("no VAE attention key renamed: the test would prove nothing")
	}
	p, err := Load(LoadOptions{Model: dir, LoRA: filepath.Join(tinyDir, "osediff_tiny.pkl")})
	if err != nil {
		t.Fatal(err)
	}
	if p.LoRAReport == nil {
		t.Fatal("no LoRA report")
	}
}
