package ram

import (
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

const testdataDir = "../../testdata/dape-tiny"

var cases = []string{"meadow", "street", "lake"}

// openRef opens ref/case_<name>.safetensors.
func openRef(t *testing.T, name string) *checkpoint.Safetensors {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(filepath.Join(testdataDir, "ref", "case_"+name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func refTensor(t *testing.T, src checkpoint.Source, key string) *tensor.Tensor {
	t.Helper()
	x, err := checkpoint.ReadTensor(src, key)
	if err != nil {
		t.Fatalf("reference %s: %v", key, err)
	}
	return x
}

// loadPNG reads an 8-bit RGB PNG as ToTensor does: [1, 3, H, W], v/255.
func loadPNG(t *testing.T, path string) *tensor.Tensor {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	h, w := b.Dy(), b.Dx()
	x := tensor.New(1, 3, h, w)
	d := x.Data()
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			var rgb [3]uint8
			switch p := img.(type) {
			case *image.NRGBA:
				o := p.PixOffset(b.Min.X+i, b.Min.Y+y)
				rgb = [3]uint8{p.Pix[o], p.Pix[o+1], p.Pix[o+2]}
			case *image.RGBA:
				o := p.PixOffset(b.Min.X+i, b.Min.Y+y)
				rgb = [3]uint8{p.Pix[o], p.Pix[o+1], p.Pix[o+2]}
			default:
				t.Fatalf("%s: unexpected PNG type %T", path, img)
			}
			for c := 0; c < 3; c++ {
				d[(c*h+y)*w+i] = float32(rgb[c]) / 255
			}
		}
	}
	return x
}

// maxAbsDiff returns the largest |a-b| and its index.
func maxAbsDiff(a, b []float32) (float64, int) {
	worst, at := 0.0, -1
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
			if math.IsNaN(d) {
				return math.Inf(1), i
			}
		}
	}
	return worst, at
}

// compare checks got against want within tol (max abs) and reports.
func compare(t *testing.T, what string, got, want *tensor.Tensor, tol float64) bool {
	t.Helper()
	if got.Numel() != want.Numel() {
		t.Errorf("%s: %d values (shape %v), want %d (shape %v)", what, got.Numel(), got.Shape(), want.Numel(), want.Shape())
		return false
	}
	d, at := maxAbsDiff(got.Contiguous().Data(), want.Contiguous().Data())
	if d > tol {
		t.Errorf("%s: max abs diff %.3g at flat index %d (got %g, want %g), tolerance %.g",
			what, d, at, got.Contiguous().Data()[at], want.Contiguous().Data()[at], tol)
		return false
	}
	t.Logf("%s: max abs diff %.3g", what, d)
	return true
}

func TestPreprocessGolden(t *testing.T) {
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			ref := openRef(t, name)
			img := loadPNG(t, filepath.Join(testdataDir, "ref", "case_"+name+"_input.png"))
			x, err := Preprocess(img, 96)
			if err != nil {
				t.Fatal(err)
			}
			// The README's float32 emulation matches torch within 7.2e-7 (1 ulp).
			compare(t, "input", x, refTensor(t, ref, "input"), 1e-6)
		})
	}
}

type promptsFile map[string]map[string]struct {
	TagIndices  []int  `json:"tag_indices"`
	Tags        string `json:"tags"`
	PromptEmpty string `json:"prompt_empty_user_prompt"`
	PromptUser  string `json:"prompt_with_user_prompt"`
}

func loadPrompts(t *testing.T) promptsFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataDir, "ref", "prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p promptsFile
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// tinyConfig reads testdata/dape-tiny/config.json.
func tinyConfig(t testing.TB) Config {
	t.Helper()
	cfg, err := LoadConfig(filepath.Join(testdataDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var (
	ramTiny  = filepath.Join(testdataDir, "weights", "ram_tiny.pth")
	dapeTiny = filepath.Join(testdataDir, "weights", "dape_tiny.pth")
)

// variants are the two reference runs: with the DAPE LoRA merged, and the
// base checkpoint alone.
var variants = []struct {
	name string // prefix of the reference tensors
	dape string // DAPE file or ""
}{
	{"dape", dapeTiny},
	{"plain", ""},
}

func loadTiny(t testing.TB, dape string) *Tagger {
	t.Helper()
	tg, err := Load(ramTiny, dape, tinyConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// recorder collects tapped intermediates by name.
type recorder map[string]*tensor.Tensor

func (r recorder) tap(name string, x *tensor.Tensor) { r[name] = x.Clone() }

// golden is one intermediate checked against a reference tensor.
type golden struct {
	name, ref string
	tol       float64
}

// checkInOrder compares the intermediates in forward order and stops at the
// first one that diverges, naming it.
func checkInOrder(t *testing.T, got recorder, ref checkpoint.Source, list []golden) {
	t.Helper()
	for _, g := range list {
		x, ok := got[g.name]
		if !ok {
			t.Fatalf("intermediate %s was not recorded", g.name)
		}
		if !compare(t, g.name, x, refTensor(t, ref, g.ref), g.tol) {
			t.Fatalf("first diverging intermediate: %s (reference %s)", g.name, g.ref)
		}
	}
}

// Suggested acceptance of the README for a float32 implementation:
// image_embeds within 1e-4, logits within 1e-3 (abs). The Swin and
// tagging-head intermediates use the image_embeds bound; scores use the
// logits bound times the largest slope of the sigmoid (1/4).
const (
	tolEmbeds = 1e-4
	tolLogits = 1e-3
	tolScores = tolLogits / 4
)

func TestSwinGolden(t *testing.T) {
	cfg := tinyConfig(t)
	for _, v := range variants {
		tg := loadTiny(t, v.dape)
		for _, name := range cases {
			t.Run(v.name+"/"+name, func(t *testing.T) {
				ref := openRef(t, name)
				rec := recorder{}
				tg.Model.imageEmbeds(refTensor(t, ref, "input"), rec.tap)
				var list []golden
				if v.name == "dape" { // the Swin intermediates are recorded for the DAPE run
					list = append(list, golden{"swin.patch_embed", "dape.swin.patch_embed", tolEmbeds})
					for i, d := range cfg.Depths {
						for j := 0; j < d; j++ {
							n := fmt.Sprintf("swin.stage%d.block%d", i, j)
							list = append(list, golden{n, "dape." + n, tolEmbeds})
						}
						if i < len(cfg.Depths)-1 {
							n := fmt.Sprintf("swin.stage%d.downsample", i)
							list = append(list, golden{n, "dape." + n, tolEmbeds})
						}
					}
					list = append(list, golden{"swin.final_norm", "dape.swin.final_norm", tolEmbeds},
						golden{"swin.output", "dape.swin.output", tolEmbeds})
				}
				list = append(list, golden{"image_embeds", v.name + ".image_embeds", tolEmbeds})
				checkInOrder(t, rec, ref, list)
			})
		}
	}
}

// selectRows returns rows idx of x [K, H].
func selectRows(x *tensor.Tensor, idx []int) *tensor.Tensor {
	h := x.Dim(1)
	out := tensor.New(len(idx), h)
	for i, r := range idx {
		copy(out.Data()[i*h:(i+1)*h], x.Data()[r*h:(r+1)*h])
	}
	return out
}

func refRows(t *testing.T, ref *checkpoint.Safetensors) []int {
	t.Helper()
	v, _, err := checkpoint.ReadInt64(ref, "rows")
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]int, len(v))
	for i, r := range v {
		rows[i] = int(r)
	}
	return rows
}

func TestTaggingHeadGolden(t *testing.T) {
	cfg := tinyConfig(t)
	for _, v := range variants {
		tg := loadTiny(t, v.dape)
		for _, name := range cases {
			t.Run(v.name+"/"+name, func(t *testing.T) {
				ref := openRef(t, name)
				rows := refRows(t, ref)
				rec := recorder{}
				e := refTensor(t, ref, v.name+".image_embeds")
				e = e.Reshape(e.Dim(1), e.Dim(2))
				logits := tg.Model.logits(tg.queries, tg.query0, e, rec.tap)
				got := recorder{"label_queries": selectRows(tg.queries, rows)}
				for name, x := range rec {
					got[name] = selectRows(x, rows)
				}
				res := tg.decide(logits)
				got["logits"] = tensor.FromData(res.Logits, 1, len(res.Logits))
				got["scores"] = tensor.FromData(res.Scores, 1, len(res.Scores))
				list := []golden{{"label_queries", "label_queries_rows", tolEmbeds}}
				if v.name == "dape" { // the head intermediates are recorded for the DAPE run
					for l := 0; l < cfg.TaggingHead.NumHiddenLayers; l++ {
						for _, part := range []string{"cross_context", "cross_out", "out"} {
							n := fmt.Sprintf("tagging.layer%d.%s", l, part)
							list = append(list, golden{n, "dape." + n + "_rows", tolEmbeds})
						}
					}
				}
				list = append(list, golden{"logits", v.name + ".logits", tolLogits}, golden{"scores", v.name + ".scores", tolScores})
				checkInOrder(t, got, ref, list)

				fired := refTensor(t, ref, v.name+".fired").Data()
				for i, f := range fired {
					if want := f != 0; want != (res.Scores[i] > tg.thresholds[i]) {
						t.Errorf("class %d (%s): fired %v, reference %v (score %g, threshold %g)",
							i, tg.tags[i], !want, want, res.Scores[i], tg.thresholds[i])
					}
				}
			})
		}
	}
}

// TestTagEndToEnd runs Tag on the input PNGs and checks the fired tags and
// both prompt strings of ref/prompts.json exactly.
func TestTagEndToEnd(t *testing.T) {
	prompts := loadPrompts(t)
	userPrompt := "clean, high-resolution, 8k"
	for _, v := range variants {
		tg := loadTiny(t, v.dape)
		for _, name := range cases {
			t.Run(v.name+"/"+name, func(t *testing.T) {
				want := prompts[name][v.name]
				ref := openRef(t, name)
				img := loadPNG(t, filepath.Join(testdataDir, "ref", "case_"+name+"_input.png"))
				res, err := tg.Tag(img)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, "logits", tensor.FromData(res.Logits, 1, len(res.Logits)), refTensor(t, ref, v.name+".logits"), tolLogits)
				if fmt.Sprint(res.Indices) != fmt.Sprint(want.TagIndices) {
					t.Errorf("fired %v, want %v", res.Indices, want.TagIndices)
				}
				if got := strings.Join(res.Tags, ", "); got != want.Tags {
					t.Errorf("tags %q, want %q", got, want.Tags)
				}
				if got := Prompt(res.Tags, ""); got != want.PromptEmpty {
					t.Errorf("prompt %q, want %q", got, want.PromptEmpty)
				}
				if got := Prompt(res.Tags, userPrompt); got != want.PromptUser {
					t.Errorf("prompt %q, want %q", got, want.PromptUser)
				}
			})
		}
	}
}
