package lora

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

const tiny = "../testdata/osediff-tiny"

var (
	tinyPkl    = filepath.Join(tiny, "osediff_tiny.pkl")
	tinyFolder = filepath.Join(tiny, "lora")
)

// readAll reads every tensor of a safetensors file into fresh tensors, as
// binding would (the "bound params" of a model without building it).
func readAll(t *testing.T, path string) map[string]*tensor.Tensor {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out := map[string]*tensor.Tensor{}
	for _, k := range st.Keys() {
		x, err := checkpoint.ReadTensor(st, k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

func baseParams(t *testing.T) (unet, vae map[string]*tensor.Tensor) {
	t.Helper()
	return readAll(t, filepath.Join(tiny, "model/unet/diffusion_pytorch_model.safetensors")),
		readAll(t, filepath.Join(tiny, "model/vae/diffusion_pytorch_model.safetensors"))
}

func cloneParams(m map[string]*tensor.Tensor) map[string]*tensor.Tensor {
	out := make(map[string]*tensor.Tensor, len(m))
	for k, v := range m {
		if v.HasData() {
			out[k] = v.Clone()
		}
	}
	return out
}

func sourceMap(t *testing.T, src checkpoint.Source) map[string]*tensor.Tensor {
	t.Helper()
	out := map[string]*tensor.Tensor{}
	for _, k := range src.Keys() {
		x, err := checkpoint.ReadTensor(src, k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

func load(t *testing.T, path string) *OSEDiffCheckpoint {
	t.Helper()
	ck, err := LoadOSEDiff(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck
}

// The module lists and ranks of both forms equal lora_meta.json (read here
// without the package's Meta type).
func TestLoadOSEDiffMeta(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(tinyFolder, "lora_meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	strs := func(key string) []string {
		var out []string
		for _, v := range meta[key].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	for _, tc := range []struct{ name, path string }{{"pkl", tinyPkl}, {"safetensors+json", tinyFolder}} {
		t.Run(tc.name, func(t *testing.T) {
			ck := load(t, tc.path)
			for _, f := range []struct {
				key string
				got []string
			}{
				{"unet_lora_encoder_modules", ck.UNetEncoderModules},
				{"unet_lora_decoder_modules", ck.UNetDecoderModules},
				{"unet_lora_others_modules", ck.UNetOthersModules},
				{"vae_lora_encoder_modules", ck.VAEEncoderModules},
			} {
				if want := strs(f.key); !slices.Equal(f.got, want) {
					t.Errorf("%s: %d entries, want %d (%v...)", f.key, len(f.got), len(want), want[:min(3, len(want))])
				}
			}
			if ck.RankUNet != int(meta["rank_unet"].(float64)) || ck.RankVAE != int(meta["rank_vae"].(float64)) {
				t.Errorf("ranks %d, %d; want %v, %v", ck.RankUNet, ck.RankVAE, meta["rank_unet"], meta["rank_vae"])
			}
			if n := len(ck.UNet.Keys()); n != 516 {
				t.Errorf("state_dict_unet has %d tensors, want 516", n)
			}
			if n := len(ck.VAE.Keys()); n != 62 {
				t.Errorf("state_dict_vae has %d tensors, want 62", n)
			}
		})
	}
}

// Every tensor of osediff_tiny.pkl equals its copy in lora/*.safetensors
// bit for bit.
func TestPklEqualsSafetensors(t *testing.T) {
	pkl, dir := load(t, tinyPkl), load(t, tinyFolder)
	for _, p := range []struct {
		name     string
		pkl, dir checkpoint.Source
	}{{"unet", pkl.UNet, dir.UNet}, {"vae", pkl.VAE, dir.VAE}} {
		if !slices.Equal(p.pkl.Keys(), p.dir.Keys()) {
			t.Fatalf("%s: key sets differ: %d vs %d", p.name, len(p.pkl.Keys()), len(p.dir.Keys()))
		}
		for _, k := range p.pkl.Keys() {
			a, err := checkpoint.ReadTensor(p.pkl, k)
			if err != nil {
				t.Fatal(err)
			}
			b, err := checkpoint.ReadTensor(p.dir, k)
			if err != nil {
				t.Fatal(err)
			}
			ia, _ := p.pkl.Info(k)
			ib, _ := p.dir.Info(k)
			if ia.DType != checkpoint.F32 || ib.DType != checkpoint.F32 || !tensor.SameShape(a.Shape(), b.Shape()) {
				t.Fatalf("%s %s: %s%v vs %s%v", p.name, k, ia.DType, a.Shape(), ib.DType, b.Shape())
			}
			for i, v := range a.Data() {
				if math.Float32bits(v) != math.Float32bits(b.Data()[i]) {
					t.Fatalf("%s %s[%d]: pkl %v, safetensors %v", p.name, k, i, v, b.Data()[i])
				}
			}
		}
	}
}

// wantMerged computes W + scale·B·A with plain loops in float64, and a bound
// on the float32 rounding of any summation order.
func wantMerged(w, a, b *tensor.Tensor, scale float64) (want, tol []float64) {
	out, r := w.Dim(0), a.Dim(0)
	k := w.Numel() / out
	wd, ad, bd := w.Data(), a.Data(), b.Data()
	want, tol = make([]float64, out*k), make([]float64, out*k)
	for o := 0; o < out; o++ {
		for j := 0; j < k; j++ {
			var s, sabs float64
			for p := 0; p < r; p++ {
				s += float64(bd[o*r+p]) * float64(ad[p*k+j])
				sabs += math.Abs(float64(bd[o*r+p]) * float64(ad[p*k+j]))
			}
			v := float64(wd[o*k+j]) + scale*s
			want[o*k+j] = v
			tol[o*k+j] = 0x1p-23 * (math.Abs(v) + float64(r+2)*scale*sabs)
		}
	}
	return want, tol
}

func TestMergeOSEDiffTiny(t *testing.T) {
	for _, tc := range []struct{ name, path string }{{"pkl", tinyPkl}, {"safetensors+json", tinyFolder}} {
		t.Run(tc.name, func(t *testing.T) {
			ck := load(t, tc.path)
			unet, vae := baseParams(t)
			unet0, vae0 := cloneParams(unet), cloneParams(vae)
			rep, err := MergeOSEDiff(unet, vae, ck, DefaultAlpha)
			if err != nil {
				t.Fatal(err)
			}
			if rep.UNet.Applied != 257 || rep.UNet.Total != 257 || rep.VAE.Applied != 31 || rep.VAE.Total != 31 {
				t.Fatalf("report %s: want 257/257 and 31/31", rep)
			}
			if rep.UNet.Scale != 2 || rep.VAE.Scale != 2 {
				t.Fatalf("scales %v, %v; want 8/4 = 2", rep.UNet.Scale, rep.VAE.Scale)
			}
			if !slices.Equal(rep.UNet.Replaced, []string{"conv_in.bias", "conv_in.weight"}) || len(rep.VAE.Replaced) != 0 {
				t.Fatalf("replaced %v / %v; want conv_in.bias, conv_in.weight / none", rep.UNet.Replaced, rep.VAE.Replaced)
			}
			lora := map[string]map[string]*tensor.Tensor{"unet": sourceMap(t, ck.UNet), "vae": sourceMap(t, ck.VAE)}
			before := map[string]map[string]*tensor.Tensor{"unet": unet0, "vae": vae0}
			after := map[string]map[string]*tensor.Tensor{"unet": unet, "vae": vae}

			// Named cases first (a Linear, a 1×1 conv, 3×3 convs, the replaced
			// conv_in), then every other module of both models.
			named := []struct{ part, module, adapter, kind string }{
				{"unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "default_encoder", "linear"},
				{"unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", "default_others", "linear"},
				{"unet", "up_blocks.1.resnets.0.conv_shortcut", "default_decoder", "conv 1x1"},
				{"unet", "down_blocks.0.resnets.0.conv1", "default_encoder", "conv 3x3"},
				{"unet", "down_blocks.0.downsamplers.0.conv", "default_encoder", "conv 3x3 stride 2"},
				{"unet", "conv_in", "default_encoder", "conv 3x3, base replaced"},
				{"vae", "quant_conv", "default_encoder", "conv 1x1"},
				{"vae", "encoder.mid_block.attentions.0.to_v", "default_encoder", "linear"},
				{"vae", "encoder.down_blocks.1.resnets.0.conv1", "default_encoder", "conv 3x3"},
			}
			checked := map[string]bool{}
			check := func(part, module, adapter, kind string) {
				t.Helper()
				la := lora[part][module+".lora_A."+adapter+".weight"]
				lb := lora[part][module+".lora_B."+adapter+".weight"]
				if la == nil || lb == nil {
					t.Fatalf("%s %s: no LoRA tensors in the checkpoint", part, module)
				}
				w0 := before[part][module+".weight"]
				if base := lora[part][module+".base_layer.weight"]; base != nil {
					w0 = base
				}
				switch kind {
				case "linear":
					if w0.Rank() != 2 {
						t.Fatalf("%s %s: base %v is not a Linear", part, module, w0.Shape())
					}
				case "conv 1x1":
					if w0.Rank() != 4 || w0.Dim(2) != 1 || w0.Dim(3) != 1 {
						t.Fatalf("%s %s: base %v is not a 1x1 conv", part, module, w0.Shape())
					}
				case "conv 3x3", "conv 3x3 stride 2", "conv 3x3, base replaced":
					if w0.Rank() != 4 || w0.Dim(2) != 3 || w0.Dim(3) != 3 {
						t.Fatalf("%s %s: base %v is not a 3x3 conv", part, module, w0.Shape())
					}
				}
				want, tol := wantMerged(w0, la, lb, float64(DefaultAlpha)/4)
				got := after[part][module+".weight"].Data()
				for i := range want {
					if d := math.Abs(float64(got[i]) - want[i]); !(d <= tol[i]) {
						t.Fatalf("%s %s (%s): merged[%d] = %v, want %v (diff %.3g > %.3g)", part, module, kind, i, got[i], want[i], d, tol[i])
					}
				}
				checked[part+" "+module+".weight"] = true
			}
			for _, n := range named {
				check(n.part, n.module, n.adapter, n.kind)
			}
			for part, src := range lora {
				for k := range src {
					if i := strings.Index(k, ".lora_A."); i >= 0 {
						adapter := strings.TrimSuffix(k[i+len(".lora_A."):], ".weight")
						check(part, k[:i], adapter, "")
					}
				}
			}
			// conv_in.bias is the checkpoint's; every other tensor is unchanged.
			if !reflect.DeepEqual(unet["conv_in.bias"].Data(), lora["unet"]["conv_in.base_layer.bias"].Data()) {
				t.Fatal("conv_in.bias was not replaced by conv_in.base_layer.bias")
			}
			checked["unet conv_in.bias"] = true
			untouched := 0
			for part, m := range after {
				for k, x := range m {
					if checked[part+" "+k] {
						continue
					}
					if !reflect.DeepEqual(x.Data(), before[part][k].Data()) {
						t.Fatalf("%s %s changed without LoRA", part, k)
					}
					untouched++
				}
			}
			if len(checked) != 257+31+1 || untouched == 0 {
				t.Fatalf("checked %d merged tensors (want 289), %d untouched", len(checked), untouched)
			}
		})
	}
}

// tinyMaps returns the folder checkpoint's tensors as editable maps.
func tinyMaps(t *testing.T) (ck *OSEDiffCheckpoint, unetSD, vaeSD map[string]*tensor.Tensor) {
	ck = load(t, tinyFolder)
	return ck, sourceMap(t, ck.UNet), sourceMap(t, ck.VAE)
}

func TestMergeOSEDiffPeftPrefix(t *testing.T) {
	ck, u, v := tinyMaps(t)
	pre := func(m map[string]*tensor.Tensor) map[string]*tensor.Tensor {
		out := map[string]*tensor.Tensor{}
		for k, x := range m {
			out["base_model.model."+k] = x
		}
		return out
	}
	alt := *ck
	alt.UNet, alt.VAE = checkpoint.MapSource(pre(u)), checkpoint.MapSource(pre(v))
	unet, vae := baseParams(t)
	unet2, vae2 := cloneParams(unet), cloneParams(vae)
	if _, err := MergeOSEDiff(unet, vae, ck, 0); err != nil {
		t.Fatal(err)
	}
	rep, err := MergeOSEDiff(unet2, vae2, &alt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UNet.Applied != 257 || rep.VAE.Applied != 31 {
		t.Fatalf("report %s", rep)
	}
	for k := range unet {
		if !reflect.DeepEqual(unet[k].Data(), unet2[k].Data()) {
			t.Fatalf("%s differs with the base_model.model. prefix", k)
		}
	}
}

func TestMergeOSEDiffErrors(t *testing.T) {
	const conv1 = "down_blocks.0.resnets.0.conv1"
	tests := []struct {
		name    string
		edit    func(ck *OSEDiffCheckpoint, unetSD, vaeSD, unet, vae map[string]*tensor.Tensor)
		part    string
		problem string
		count   int // problems expected; 0 means 1
	}{
		{"unused tensor", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			u["time_embedding.linear_1.scale"] = tensor.New(4)
		}, "unet", "time_embedding.linear_1.scale: unused", 1},
		{"LoRA of an unlisted module", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			u["time_embedding.linear_1.lora_A.default_encoder.weight"] = tensor.New(4, 16)
			u["time_embedding.linear_1.lora_B.default_encoder.weight"] = tensor.New(64, 4)
		}, "unet", "time_embedding.linear_1: LoRA tensors of a module not in the checkpoint's module lists", 1},
		{"unused VAE tensor", func(_ *OSEDiffCheckpoint, _, v, _, _ map[string]*tensor.Tensor) {
			v["decoder.conv_in.lora_A.default_encoder.weight"] = tensor.New(4, 4, 3, 3)
		}, "vae", "decoder.conv_in: LoRA tensors of a module not in", 1},
		{"module without a base weight", func(_ *OSEDiffCheckpoint, _, _, unet, _ map[string]*tensor.Tensor) {
			delete(unet, conv1+".weight")
		}, "unet", conv1 + ": LoRA for a module without a bound (contiguous) base weight", 1},
		{"unbound base weight", func(_ *OSEDiffCheckpoint, _, _, unet, _ map[string]*tensor.Tensor) {
			unet[conv1+".weight"] = tensor.Shaped(unet[conv1+".weight"].Shape()...)
		}, "unet", conv1 + ": LoRA for a module without a bound", 1},
		{"lora_B missing", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			delete(u, conv1+".lora_B.default_encoder.weight")
		}, "unet", conv1 + ": lora_A or lora_B is missing", 1},
		{"listed module without tensors", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			delete(u, conv1+".lora_A.default_encoder.weight")
			delete(u, conv1+".lora_B.default_encoder.weight")
		}, "unet", conv1 + ": listed for adapter default_encoder but the checkpoint has no LoRA tensors", 1},
		{"wrong adapter", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			for _, ab := range []string{"A", "B"} {
				k := conv1 + ".lora_" + ab + ".default_encoder.weight"
				u[conv1+".lora_"+ab+".default_decoder.weight"] = u[k]
				delete(u, k)
			}
		}, "unet", conv1 + ": LoRA tensors of adapter default_decoder, but the module is listed for default_encoder", 1},
		{"wrong rank", func(ck *OSEDiffCheckpoint, _, _, _, _ map[string]*tensor.Tensor) {
			ck.RankVAE = 8
		}, "vae", "rank 4, the checkpoint says 8", 31},
		{"shape mismatch", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			u[conv1+".lora_A.default_encoder.weight"] = tensor.New(4, 16, 1, 1)
		}, "unet", conv1 + ": shapes do not fit", 1},
		{"base_layer without a base tensor", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			u["conv_out.base_layer.scale"] = tensor.New(4)
		}, "unet", "conv_out.base_layer.scale: no base tensor conv_out.scale to replace", 1},
		{"base_layer of another shape", func(_ *OSEDiffCheckpoint, u, _, _, _ map[string]*tensor.Tensor) {
			u["conv_in.base_layer.bias"] = tensor.New(17)
		}, "unet", "conv_in.base_layer.bias: shape [17], base tensor conv_in.bias has [16]", 1},
		{"no VAE params", func(_ *OSEDiffCheckpoint, _, _, _, vae map[string]*tensor.Tensor) {
			clear(vae)
		}, "vae", "encoder.conv_in: LoRA for a module without a bound", 31},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck, u, v := tinyMaps(t)
			unet, vae := baseParams(t)
			alt := *ck
			tc.edit(&alt, u, v, unet, vae)
			alt.UNet, alt.VAE = checkpoint.MapSource(u), checkpoint.MapSource(v)
			unet0, vae0 := cloneParams(unet), cloneParams(vae)
			rep, err := MergeOSEDiff(unet, vae, &alt, DefaultAlpha)
			var me *MergeError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v (report %v), want a *MergeError", err, rep)
			}
			if me.Part != tc.part || !slices.ContainsFunc(me.Problems, func(p string) bool { return strings.Contains(p, tc.problem) }) {
				t.Fatalf("problems of %s: %q\nwant one in %s containing %q", me.Part, me.Problems, tc.part, tc.problem)
			}
			if want := max(tc.count, 1); len(me.Problems) != want {
				t.Fatalf("want %d problem(s), got %q", want, me.Problems)
			}
			for name, p := range map[string][2]map[string]*tensor.Tensor{"unet": {unet, unet0}, "vae": {vae, vae0}} {
				for k, x := range p[0] {
					if x.HasData() && !reflect.DeepEqual(x.Data(), p[1][k].Data()) {
						t.Fatalf("%s %s changed by a failed merge", name, k)
					}
				}
			}
		})
	}
}

func TestMergeOSEDiffAlpha(t *testing.T) {
	ck := load(t, tinyFolder)
	for _, tc := range []struct {
		alpha float32
		scale float32
		err   bool
	}{{0, 2, false}, {8, 2, false}, {4, 1, false}, {-1, 0, true}, {float32(math.NaN()), 0, true}} {
		unet, vae := baseParams(t)
		rep, err := MergeOSEDiff(unet, vae, ck, tc.alpha)
		if (err != nil) != tc.err {
			t.Fatalf("alpha %v: err %v", tc.alpha, err)
		}
		if err == nil && (rep.UNet.Scale != tc.scale || rep.VAE.Scale != tc.scale) {
			t.Fatalf("alpha %v: scale %v, want %v", tc.alpha, rep.UNet.Scale, tc.scale)
		}
	}
}

func TestLoadOSEDiffErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pkl")
	os.WriteFile(bad, []byte("not a checkpoint"), 0o644)
	noMeta := filepath.Join(dir, "nometa")
	os.Mkdir(noMeta, 0o755)
	for _, p := range []string{filepath.Join(dir, "missing.pkl"), bad, noMeta} {
		if ck, err := LoadOSEDiff(p); err == nil {
			ck.Close()
			t.Errorf("LoadOSEDiff(%s) succeeded", p)
		} else if !strings.HasPrefix(err.Error(), "lora: ") {
			t.Errorf("LoadOSEDiff(%s): %v", p, err)
		}
	}
}
