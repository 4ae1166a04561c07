package ram

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

func TestConfig(t *testing.T) {
	tiny := tinyConfig(t)
	want := Config{
		InputSize: 96, PatchSize: 4, WindowSize: 3, EmbedDim: 8,
		Depths: []int{2, 2, 2, 2}, NumHeads: []int{1, 2, 2, 4}, MLPRatio: 4,
		VisionWidth: 64, LabelEmbedDim: 512,
		TaggingHead: TaggingHeadConfig{HiddenSize: 32, NumAttentionHeads: 4, IntermediateSize: 128, NumHiddenLayers: 2, LayerNormEps: 1e-12},
		NumClasses:  4585,
		LoRA:        LoRAConfig{R: 8, Alpha: 1},
	}
	if got, w := fmtConfig(tiny), fmtConfig(want); got != w {
		t.Errorf("LoadConfig(tiny) = %s\nwant %s", got, w)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	// The real stage geometry: grids 96/48/24/12, shift 6 except the last stage.
	wantStages := []stage{{96, 192, 6, 2, 12, 6}, {48, 384, 12, 2, 12, 6}, {24, 768, 24, 18, 12, 6}, {12, 1536, 48, 2, 12, 0}}
	for i, s := range DefaultConfig().stages() {
		if s != wantStages[i] {
			t.Errorf("stage %d = %+v, want %+v", i, s, wantStages[i])
		}
	}

	bad := []struct {
		name string
		edit func(*Config)
		msg  string
	}{
		{"input not multiple of patch", func(c *Config) { c.InputSize = 98 }, "multiple of patch_size"},
		{"window does not divide grid", func(c *Config) { c.WindowSize = 5 }, "not a multiple of window"},
		{"heads do not divide width", func(c *Config) { c.NumHeads = []int{3, 2, 2, 4} }, "divide width"},
		{"depths/heads length", func(c *Config) { c.Depths = []int{2, 2, 2} }, "equal length"},
		{"vision width", func(c *Config) { c.VisionWidth = 32 }, "vision_width"},
		{"tagging heads", func(c *Config) { c.TaggingHead.NumAttentionHeads = 5 }, "tagging_head"},
		{"lora rank", func(c *Config) { c.LoRA.R = 0 }, "lora.r"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			c := tinyConfig(t)
			b.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), b.msg) {
				t.Errorf("Validate() = %v, want an error about %q", err, b.msg)
			}
		})
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "c.json")
	os.WriteFile(p, []byte(`{"input_size": 96, "patch_size": 4, "window_size": 3, "embed_dim": 8, "depths": [2,2,2,2],
		"num_heads": [1,2,2,4], "vision_width": 64, "some_unknown_field": {"x": 1}}`), 0o644)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatalf("unknown fields must be ignored: %v", err)
	}
	if c.TaggingHead.HiddenSize != 768 || c.NumClasses != 4585 {
		t.Errorf("absent fields should keep the defaults: %+v", c)
	}
	if _, err := LoadConfig(filepath.Join(dir, "absent.json")); err == nil {
		t.Error("LoadConfig of a missing file: no error")
	}
}

func fmtConfig(c Config) string { return fmt.Sprintf("%+v", c) }

func TestPrompt(t *testing.T) {
	for _, tc := range []struct {
		tags []string
		user string
		want string
	}{
		{nil, "", ", ,"},
		{[]string{"sky"}, "", "sky, ,"},
		{[]string{"building", "city", "sky"}, "", "building, city, sky, ,"},
		{[]string{"building", "sky"}, "clean, high-resolution, 8k", "building, sky, clean, high-resolution, 8k,"},
		{nil, "clean", ", clean,"},
	} {
		if got := Prompt(tc.tags, tc.user); got != tc.want {
			t.Errorf("Prompt(%q, %q) = %q, want %q", tc.tags, tc.user, got, tc.want)
		}
	}
}

func TestEmbeddedTagList(t *testing.T) {
	tags, th := TagList(), Thresholds()
	if len(tags) != 4585 || len(th) != 4585 {
		t.Fatalf("%d tags, %d thresholds; want 4585", len(tags), len(th))
	}
	if tags[0] != "3D CG rendering" {
		t.Errorf("first tag %q", tags[0])
	}
	if tags[len(tags)-1] != "zoo" {
		t.Errorf("last tag %q, want zoo", tags[len(tags)-1])
	}
	counts := map[float32]int{}
	for _, v := range th {
		counts[v]++
	}
	// ../shared/design/osediff.md §6: 3414 are 0.65, 735 are 0.8, 119 are 0.9.
	if counts[0.65] != 3414 || counts[0.8] != 735 || counts[0.9] != 119 {
		t.Errorf("threshold counts 0.65:%d 0.8:%d 0.9:%d", counts[0.65], counts[0.8], counts[0.9])
	}
}

// TestWindowBuffers checks the relative position index and the
// shifted-window mask against the buffers stored in ram_tiny.pth.
func TestWindowBuffers(t *testing.T) {
	cfg := tinyConfig(t)
	f, err := checkpoint.OpenTorch(ramTiny)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := f.Source("model")
	if err != nil {
		t.Fatal(err)
	}
	m := NewRAMLora(cfg)
	checked := 0
	for i, l := range m.VisualEncoder.Layers {
		for j := range l.Blocks {
			b := &l.Blocks[j]
			pre := "visual_encoder.layers." + strconv.Itoa(i) + ".blocks." + strconv.Itoa(j) + ".attn"
			idx := refTensor(t, src, pre+".relative_position_index").Data()
			for k, v := range b.Attn.relIndex {
				if float32(v) != idx[k] {
					t.Fatalf("%s: index %d = %d, stored %g", pre, k, v, idx[k])
				}
			}
			maskKey := "visual_encoder.layers." + strconv.Itoa(i) + ".blocks." + strconv.Itoa(j) + ".attn_mask"
			if _, ok := src.Info(maskKey); !ok {
				if b.region != nil {
					t.Errorf("stage %d block %d: shifted here, but the reference has no attn_mask", i, j)
				}
				continue
			}
			if b.region == nil {
				t.Fatalf("stage %d block %d: reference has attn_mask, we do not shift", i, j)
			}
			mask := refTensor(t, src, maskKey) // [nW, N, N]
			nw, n := mask.Dim(0), mask.Dim(1)
			md := mask.Data()
			for w := 0; w < nw; w++ {
				for p := 0; p < n; p++ {
					for q := 0; q < n; q++ {
						var want float32
						if b.region[w*n+p] != b.region[w*n+q] {
							want = -100
						}
						if got := md[(w*n+p)*n+q]; got != want {
							t.Fatalf("%s[%d,%d,%d] = %g, ours %g", maskKey, w, p, q, got, want)
						}
					}
				}
			}
			checked++
		}
	}
	if checked != 3 { // the odd blocks of stages 0-2 shift; stage 3's grid equals the window
		t.Errorf("checked %d masks, want 3", checked)
	}
}

// TestMergeLoRA checks the loralib merge rules on a hand-made model.
func TestMergeLoRA(t *testing.T) {
	cfg := tinyConfig(t)
	r := cfg.LoRA.R
	fill := func(shape ...int) *tensor.Tensor {
		x := tensor.New(shape...)
		for i := range x.Data() {
			x.Data()[i] = float32(math.Sin(float64(i)*0.37 + float64(len(shape))))
		}
		return x
	}
	c := cfg.EmbedDim // stage 0 block 0 qkv: [3C, C]
	h, e := cfg.TaggingHead.HiddenSize, cfg.LabelEmbedDim
	qkvA, qkvB := fill(2*r, c), fill(2*c, r)
	thA, thB := fill(r, e), fill(h, r) // tagging_head layer 0 key
	teA, teB := fill(r, h), fill(h, r) // tag_encoder layer 1 query (tied)
	qA, qB := fill(r, h), fill(h, r)   // tagging_head layer 1 query

	// Reference delta in float64: B·A·alpha/r.
	delta := func(a, b *tensor.Tensor, rowA0, rowB0, rows int) [][]float64 {
		in := a.Dim(1)
		out := make([][]float64, rows)
		for o := range out {
			out[o] = make([]float64, in)
			for i := 0; i < in; i++ {
				var s float64
				for k := 0; k < r; k++ {
					s += float64(b.At(rowB0+o, k)) * float64(a.At(rowA0+k, i))
				}
				out[o][i] = s * cfg.LoRA.Alpha / float64(r)
			}
		}
		return out
	}

	base := func() *RAMLora {
		m := NewRAMLora(cfg)
		checkpoint.RandomInit(m, 7)
		return m
	}
	m0, m := base(), base()
	pairs := map[string]*loraPair{
		"visual_encoder.layers.0.blocks.0.attn.qkv":                 {qkvA, qkvB},
		"tagging_head.encoder.layer.0.crossattention.self.key":      {thA, thB},
		"tag_encoder.encoder.layer.1.crossattention.self.query":     {teA, teB},
		"tagging_head.encoder.layer.1.crossattention.self.query":    {qA, qB},
		"tag_encoder.encoder.layer.0.attention.self.query":          {fill(r, h), fill(h, r)}, // not on the tagging path
		"text_decoder.bert.encoder.layer.0.crossattention.self.key": {fill(r, h), fill(h, r)},
	}
	n, err := mergeLoRA(m, cfg, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("merged %d layers, want 4", n)
	}
	check := func(name string, got, orig *tensor.Tensor, rowOff int, d [][]float64) {
		t.Helper()
		for o, row := range d {
			for i, v := range row {
				want := float64(orig.At(rowOff+o, i)) + v
				if g := float64(got.At(rowOff+o, i)); math.Abs(g-want) > 1e-5*(1+math.Abs(want)) {
					t.Fatalf("%s[%d,%d] = %g, want %g", name, rowOff+o, i, g, want)
				}
			}
		}
	}
	same := func(name string, got, orig *tensor.Tensor) {
		t.Helper()
		if d, at := maxAbsDiff(got.Data(), orig.Data()); d != 0 {
			t.Errorf("%s changed (%g at %d), want untouched", name, d, at)
		}
	}
	qkv, qkv0 := m.VisualEncoder.Layers[0].Blocks[0].Attn.QKV, m0.VisualEncoder.Layers[0].Blocks[0].Attn.QKV
	check("qkv q rows", qkv.Weight, qkv0.Weight, 0, delta(qkvA, qkvB, 0, 0, c))
	check("qkv v rows", qkv.Weight, qkv0.Weight, 2*c, delta(qkvA, qkvB, r, c, c))
	same("qkv k rows", qkv.Weight.Narrow(0, c, c).Contiguous(), qkv0.Weight.Narrow(0, c, c).Contiguous())
	same("qkv bias", qkv.Bias, qkv0.Bias)
	l0, l00 := m.TaggingHead.Encoder.Layer[0].CrossAttention.Self, m0.TaggingHead.Encoder.Layer[0].CrossAttention.Self
	check("layer0 key", l0.Key.Weight, l00.Key.Weight, 0, delta(thA, thB, 0, 0, h))
	same("layer0 query", l0.Query.Weight, l00.Query.Weight)
	same("layer0 value", l0.Value.Weight, l00.Value.Weight)
	l1, l10 := m.TaggingHead.Encoder.Layer[1].CrossAttention.Self, m0.TaggingHead.Encoder.Layer[1].CrossAttention.Self
	both := delta(qA, qB, 0, 0, h)
	for o, row := range delta(teA, teB, 0, 0, h) {
		for i := range row {
			both[o][i] += row[i]
		}
	}
	check("layer1 query (tagging head + tied tag_encoder)", l1.Query.Weight, l10.Query.Weight, 0, both)
	same("layer1 key", l1.Key.Weight, l10.Key.Weight)
	same("stage 0 block 1 qkv", m.VisualEncoder.Layers[0].Blocks[1].Attn.QKV.Weight, m0.VisualEncoder.Layers[0].Blocks[1].Attn.QKV.Weight)

	bad := []struct {
		name  string
		pairs map[string]*loraPair
		msg   string
	}{
		{"lone A", map[string]*loraPair{"tagging_head.encoder.layer.0.crossattention.self.key": {A: thA}}, "only one of"},
		{"wrong rank", map[string]*loraPair{"tagging_head.encoder.layer.0.crossattention.self.key": {fill(4, e), fill(h, 4)}}, "r=8"},
		{"qkv B not 2C rows", map[string]*loraPair{"visual_encoder.layers.0.blocks.0.attn.qkv": {qkvA, fill(3*c, r)}}, "q and v enabled"},
		{"value has no LoRA", map[string]*loraPair{"tagging_head.encoder.layer.0.crossattention.self.value": {thA, thB}}, "does not know"},
		{"layer out of range", map[string]*loraPair{"tagging_head.encoder.layer.2.crossattention.self.key": {thA, thB}}, "does not know"},
		{"swin mlp", map[string]*loraPair{"visual_encoder.layers.0.blocks.0.mlp.fc1": {fill(r, c), fill(4*c, r)}}, "does not know"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if _, err := mergeLoRA(base(), cfg, b.pairs); err == nil || !strings.Contains(err.Error(), b.msg) {
				t.Errorf("mergeLoRA = %v, want an error about %q", err, b.msg)
			}
		})
	}
}

// TestLoadErrors checks that bad inputs give clear errors, never panics.
func TestLoadErrors(t *testing.T) {
	cfg := tinyConfig(t)
	wide := cfg
	wide.EmbedDim, wide.VisionWidth = 16, 128
	dir := t.TempDir()
	notLoRA := filepath.Join(dir, "full.pth")
	// A DAPE file must hold only lora_ tensors: the RAM file itself is not one.
	if b, err := os.ReadFile(ramTiny); err == nil {
		os.WriteFile(notLoRA, b, 0o644)
	}
	for _, tc := range []struct {
		name      string
		ram, dape string
		cfg       Config
		msg       string
	}{
		{"missing RAM file", filepath.Join(dir, "absent.pth"), "", cfg, "absent.pth"},
		{"missing DAPE file", ramTiny, filepath.Join(dir, "absent.pth"), cfg, "absent.pth"},
		{"config does not fit the weights", ramTiny, "", wide, "mis-shaped"},
		{"invalid config", ramTiny, "", Config{}, "input_size"},
		{"DAPE file of full weights", ramTiny, notLoRA, cfg, "not LoRA weights"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.ram, tc.dape, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Load = %v, want an error mentioning %q", err, tc.msg)

			}
		})
	}
	// The configuration mismatch comes back as one BindError listing the keys.
	_, err := Load(ramTiny, "", wide)
	var be *checkpoint.BindError
	if !errors.As(err, &be) || len(be.Mismatched) == 0 {
		t.Errorf("want a *checkpoint.BindError with mis-shaped keys, got %v", err)
	}
}

func TestTagBadInput(t *testing.T) {
	tg := loadTiny(t, "")
	for _, shape := range [][]int{{3, 32, 32}, {2, 3, 32, 32}, {1, 4, 32, 32}, {1, 3, 0, 32}} {
		if _, err := tg.Tag(tensor.New(shape...)); err == nil {
			t.Errorf("Tag(%v): no error", shape)
		}
	}
	if _, err := tg.Tag(nil); err == nil {
		t.Error("Tag(nil): no error")
	}
}

// randomSwinL builds the real configuration with random weights.
func randomSwinL(t testing.TB) *Tagger {
	t.Helper()
	cfg := DefaultConfig()
	m := NewRAMLora(cfg)
	checkpoint.RandomInit(m, 1)
	tg, err := NewTagger(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// testImage is a smooth colour ramp [1, 3, h, w] in [0, 1].
func testImage(h, w int) *tensor.Tensor {
	x := tensor.New(1, 3, h, w)
	d := x.Data()
	for c := 0; c < 3; c++ {
		for i := 0; i < h; i++ {
			for j := 0; j < w; j++ {
				d[(c*h+i)*w+j] = float32(0.5 + 0.5*math.Sin(float64(i*(c+1))*0.05+float64(j)*0.03))
			}
		}
	}
	return x
}

// TestSwinLRandom runs the real Swin-L configuration (random weights) on a
// 384×384 image.
func TestSwinLRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size Swin-L forward; run without -short")
	}
	tg := randomSwinL(t)
	start := time.Now()
	res, err := tg.Tag(testImage(384, 384))
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	cfg := DefaultConfig()
	if len(res.Logits) != cfg.NumClasses || len(res.Scores) != cfg.NumClasses {
		t.Fatalf("%d logits, %d scores", len(res.Logits), len(res.Scores))
	}
	for i, l := range res.Logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 0) {
			t.Fatalf("logit %d = %g", i, l)
		}
		if s := res.Scores[i]; !(s >= 0 && s <= 1) {
			t.Fatalf("score %d = %g", i, s)
		}
	}
	t.Logf("Swin-L 384x384 random weights: %v, %.1f GFLOP, %.2f GFLOP/s, %d tags fired",
		el, FLOPs(cfg)/1e9, FLOPs(cfg)/el.Seconds()/1e9, len(res.Tags))
}

func BenchmarkTaggerSwinL384(b *testing.B) {
	tg := randomSwinL(b)
	img := testImage(384, 384)
	flops := FLOPs(DefaultConfig())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tg.Tag(img); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(sec, "s/op")
	b.ReportMetric(flops/sec/1e9, "GFLOP/s")
}

// TestVisionMultiRename loads a RAM state dict whose tagging head is named
// "vision_multi" (the official loader renames it) and checks that it tags
// exactly as the tagging_head file does.
func TestVisionMultiRename(t *testing.T) {
	cfg := tinyConfig(t)
	f, err := checkpoint.OpenTorch(ramTiny)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := f.Source("model")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*tensor.Tensor{}
	renamed := 0
	for _, k := range src.Keys() {
		x, err := checkpoint.ReadTensor(src, k)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(k, "tagging_head.") {
			k = "vision_multi." + strings.TrimPrefix(k, "tagging_head.")
			renamed++
		}
		m[k] = x
	}
	if renamed == 0 {
		t.Fatal("no tagging_head keys to rename")
	}
	tg, err := loadSources(checkpoint.MapSource(m), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := loadTiny(t, "")
	img := loadPNG(t, filepath.Join(testdataDir, "ref", "case_meadow_input.png"))
	a, err := tg.Tag(img)
	if err != nil {
		t.Fatal(err)
	}
	b, err := want.Tag(img)
	if err != nil {
		t.Fatal(err)
	}
	if d, at := maxAbsDiff(a.Logits, b.Logits); d != 0 {
		t.Errorf("vision_multi file: logits differ by %g at %d", d, at)
	}
}
