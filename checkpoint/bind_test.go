package checkpoint

import (
	"errors"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

type tLinear struct {
	Weight *tensor.Tensor `weights:"weight"`
	Bias   *tensor.Tensor `weights:"bias,optional"`
	In     int
}

func newTLinear(in, out int) *tLinear {
	return &tLinear{Weight: tensor.Shaped(out, in), Bias: tensor.Shaped(out), In: in}
}

type tInner struct {
	Scale *tensor.Tensor `weights:"scale"`
}

type tModel struct {
	ConvIn   *tLinear          `weights:"conv_in"`
	Blocks   []*tLinear        `weights:"blocks"`
	Arr      [2]tLinear        `weights:"arr"`
	Iface    any               `weights:"iface"`
	Inner    tInner            // untagged: same prefix
	Shortcut *tLinear          `weights:"shortcut,optional"`
	List     []*tensor.Tensor  `weights:"list"`
	Skip     *tensor.Tensor    `weights:"-"`
	Cache    *tensor.Tensor    // untagged tensor: not a weight
	Extra    map[string]string // ignored kind
	hidden   *tLinear          `weights:"hidden"`
}

func newTModel() *tModel {
	m := &tModel{
		ConvIn:   newTLinear(3, 2),
		Blocks:   []*tLinear{newTLinear(2, 2), newTLinear(2, 4)},
		Iface:    newTLinear(4, 1),
		Inner:    tInner{Scale: tensor.Shaped(1)},
		Shortcut: newTLinear(2, 2),
		List:     []*tensor.Tensor{tensor.Shaped(2), tensor.Shaped(3)},
		Skip:     tensor.Shaped(1),
		Cache:    tensor.Shaped(1),
		hidden:   newTLinear(1, 1),
	}
	m.Arr[0], m.Arr[1] = *newTLinear(1, 1), *newTLinear(1, 2)
	return m
}

// fullSource holds every key of newTModel with values 0, 1, 2, ... per tensor.
func fullSource(prefix string) map[string]*tensor.Tensor {
	m := map[string]*tensor.Tensor{}
	for k, t := range Params(newTModel()) {
		d := make([]float32, t.Numel())
		for i := range d {
			d[i] = float32(i) + float32(len(k))
		}
		m[prefix+k] = tensor.FromData(d, t.Shape()...)
	}
	return m
}

func TestParamsKeys(t *testing.T) {
	got, err := Keys(newTModel())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"arr.0.bias", "arr.0.weight", "arr.1.bias", "arr.1.weight",
		"blocks.0.bias", "blocks.0.weight", "blocks.1.bias", "blocks.1.weight",
		"conv_in.bias", "conv_in.weight", "iface.bias", "iface.weight",
		"list.0", "list.1", "scale", "shortcut.bias", "shortcut.weight",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keys\n got %v\nwant %v", got, want)
	}
	if _, err := Keys(tModel{}); !errors.Is(err, ErrNoModel) {
		t.Fatalf("non-pointer model: %v", err)
	}
}

func TestBind(t *testing.T) {
	del := func(keys ...string) func(map[string]*tensor.Tensor) {
		return func(m map[string]*tensor.Tensor) {
			for _, k := range keys {
				delete(m, k)
			}
		}
	}
	tests := []struct {
		name    string
		edit    func(map[string]*tensor.Tensor)
		opts    BindOptions
		prefix  string // added to every source key
		check   func(t *testing.T, m *tModel, rep *BindReport)
		wantErr *BindError
	}{
		{name: "complete", check: func(t *testing.T, m *tModel, rep *BindReport) {
			if rep.Bound != 17 || rep.AbsentOptional != 0 || rep.Elements != 49 {
				t.Fatalf("report %+v", rep)
			}
			// Each key landed in its own field.
			if v := m.Blocks[1].Weight.At(3, 1); v != 7+float32(len("blocks.1.weight")) {
				t.Fatalf("blocks.1.weight[3,1] = %v", v)
			}
			if v := m.Iface.(*tLinear).Weight.At(0, 2); v != 2+float32(len("iface.weight")) {
				t.Fatalf("iface.weight = %v", v)
			}
			if v := m.Inner.Scale.At(0); v != float32(len("scale")) {
				t.Fatalf("scale = %v", v)
			}
			if v := m.List[1].At(2); v != 2+float32(len("list.1")) {
				t.Fatalf("list.1 = %v", v)
			}
			if m.Skip.HasData() || m.Cache.HasData() || m.hidden.Weight.HasData() {
				t.Fatal("skipped field bound")
			}
		}},
		{name: "optional absent", edit: del("conv_in.bias", "shortcut.weight", "shortcut.bias"),
			check: func(t *testing.T, m *tModel, rep *BindReport) {
				if m.ConvIn.Bias != nil || m.Shortcut != nil || rep.AbsentOptional != 2 || rep.Bound != 14 {
					t.Fatalf("bias %v shortcut %v report %+v", m.ConvIn.Bias, m.Shortcut, rep)
				}
			}},
		{name: "optional group half present", edit: del("shortcut.bias"),
			check: func(t *testing.T, m *tModel, rep *BindReport) {
				if m.Shortcut == nil || m.Shortcut.Bias != nil || !m.Shortcut.Weight.HasData() {
					t.Fatalf("shortcut %+v", m.Shortcut)
				}
			}},
		{name: "all problems at once",
			edit: func(m map[string]*tensor.Tensor) {
				delete(m, "blocks.1.weight")
				delete(m, "scale")
				m["arr.1.weight"] = tensor.New(2, 2)
				m["conv_in.weight"] = tensor.New(3, 2)
				m["extra.weight"] = tensor.New(1)
				m["position_ids"] = tensor.New(1)
				m["text.position_ids"] = tensor.New(1)
				m["logs.a"] = tensor.New(1)
			},
			opts: BindOptions{Ignore: []string{"*position_ids", "logs."}},
			wantErr: &BindError{
				Missing:    []string{"blocks.1.weight", "scale"},
				Unused:     []string{"extra.weight"},
				Mismatched: []string{"arr.1.weight: source [2, 2] vs model [2, 1]", "conv_in.weight: source [3, 2] vs model [2, 3]"},
			},
			check: func(t *testing.T, m *tModel, rep *BindReport) {
				if want := []string{"logs.a", "position_ids", "text.position_ids"}; !reflect.DeepEqual(rep.Ignored, want) {
					t.Fatalf("ignored %v", rep.Ignored)
				}
			}},
		{name: "prefix", prefix: "unet.",
			edit: func(m map[string]*tensor.Tensor) { m["vae.x"] = tensor.New(1) },
			opts: BindOptions{Prefix: "unet."},
			check: func(t *testing.T, m *tModel, rep *BindReport) {
				if rep.Bound != 17 {
					t.Fatalf("report %+v", rep)
				}
			}},
		{name: "rename", prefix: "model.",
			edit: func(m map[string]*tensor.Tensor) { m["model.drop_me"] = tensor.New(1) },
			opts: BindOptions{Rename: func(k string) string {
				if k == "model.drop_me" {
					return ""
				}
				return strings.TrimPrefix(k, "model.")
			}},
			check: func(t *testing.T, m *tModel, rep *BindReport) {
				if rep.Bound != 17 {
					t.Fatalf("report %+v", rep)
				}
			}},
		{name: "rename collision",
			opts: BindOptions{Rename: func(k string) string {
				if k == "list.0" {
					return "scale"
				}
				return k
			}},
			wantErr: &BindError{
				Missing:    []string{"list.0"},
				Mismatched: []string{"list.0: source [2] vs model [1]"},
				Failed:     []string{`scale: source keys "list.0" and "scale" both map to it`},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := fullSource(tc.prefix)
			if tc.edit != nil {
				tc.edit(src)
			}
			m := newTModel()
			rep, err := Bind(m, MapSource(src), tc.opts)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var be *BindError
				if !errors.As(err, &be) {
					t.Fatalf("error %v, want a *BindError", err)
				}
				norm := func(s []string) []string { return append([]string{}, s...) }
				got := &BindError{norm(be.Missing), norm(be.Unused), norm(be.Mismatched), norm(be.Failed)}
				want := &BindError{norm(tc.wantErr.Missing), norm(tc.wantErr.Unused), norm(tc.wantErr.Mismatched), norm(tc.wantErr.Failed)}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("error\n got %#v\nwant %#v", got, want)
				}
				for _, k := range append(append(be.Missing, be.Unused...), be.Mismatched...) {
					if !strings.Contains(err.Error(), k) {
						t.Fatalf("message lacks %q:\n%v", k, err)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, m, rep)
			}
		})
	}
}

func TestBindNonPointer(t *testing.T) {
	if _, err := Bind(*newTModel(), MapSource(nil), BindOptions{}); !errors.Is(err, ErrNoModel) {
		t.Fatalf("got %v", err)
	}
	if _, err := Bind(nil, MapSource(nil), BindOptions{}); !errors.Is(err, ErrNoModel) {
		t.Fatalf("got %v", err)
	}
}

func TestRandomInit(t *testing.T) {
	a, b := newTModel(), newTModel()
	big := &struct {
		W    *tensor.Tensor `weights:"w"`
		Norm *tensor.Tensor `weights:"norm.weight"`
	}{W: tensor.Shaped(64, 32, 3, 3), Norm: tensor.Shaped(256)}
	RandomInit(a, 7)
	RandomInit(b, 7)
	RandomInit(big, 7)
	pa, pb := Params(a), Params(b)
	keys := make([]string, 0, len(pa))
	for k := range pa {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !pa[k].HasData() {
			t.Fatalf("%s not filled", k)
		}
		if !reflect.DeepEqual(pa[k].Data(), pb[k].Data()) {
			t.Fatalf("%s differs between runs with the same seed", k)
		}
	}
	// Weight std ~ 1/sqrt(fan_in), norm weights ~ 1.
	var s2, ns float64
	for _, v := range big.W.Data() {
		s2 += float64(v) * float64(v)
	}
	std := math.Sqrt(s2 / float64(big.W.Numel()))
	if want := 1 / math.Sqrt(32*9); math.Abs(std-want) > 0.05*want {
		t.Fatalf("weight std %v, want ~%v", std, want)
	}
	for _, v := range big.Norm.Data() {
		ns += float64(v)
	}
	if mean := ns / 256; math.Abs(mean-1) > 0.01 {
		t.Fatalf("norm weight mean %v, want ~1", mean)
	}
}

func TestLoadJSON(t *testing.T) {
	var idx struct {
		ClassName string    `json:"_class_name"`
		UNet      [2]string `json:"unet"`
	}
	if err := LoadJSON("../testdata/osediff-tiny/model/model_index.json", &idx); err != nil {
		t.Fatal(err)
	}
	if idx.UNet[1] != "UNet2DConditionModel" {
		t.Fatalf("model_index %+v", idx)
	}
	if err := LoadJSON("../testdata/osediff-tiny/README.md", &idx); err == nil {
		t.Fatal("README parsed as JSON")
	}
	if err := LoadJSON("nope.json", &idx); err == nil {
		t.Fatal("missing file accepted")
	}
}
