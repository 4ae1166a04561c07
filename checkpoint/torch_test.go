package checkpoint

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const (
	osediffPkl = "../testdata/osediff-tiny/osediff_tiny.pkl"
	ramPth     = "../testdata/dape-tiny/weights/ram_tiny.pth"
	dapePth    = "../testdata/dape-tiny/weights/dape_tiny.pth"
)

// TestOSEDiffPkl checks every tensor of osediff_tiny.pkl against its
// safetensors copy bit for bit, and the module lists and ranks against
// lora_meta.json.
func TestOSEDiffPkl(t *testing.T) {
	f, err := OpenTorch(osediffPkl)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, ok := f.Root().(map[string]any)
	if !ok {
		t.Fatalf("root is %T", f.Root())
	}
	var meta map[string]any
	if err := LoadJSON("../testdata/osediff-tiny/lora/lora_meta.json", &meta); err != nil {
		t.Fatal(err)
	}
	var top []string
	for k := range root {
		top = append(top, k)
	}
	sort.Strings(top)
	var wantTop []string
	for _, k := range meta["pkl_top_level_keys"].([]any) {
		wantTop = append(wantTop, k.(string))
	}
	sort.Strings(wantTop)
	if !reflect.DeepEqual(top, wantTop) {
		t.Fatalf("top-level keys %v, want %v", top, wantTop)
	}
	for _, k := range []string{"unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules", "vae_lora_encoder_modules"} {
		if !reflect.DeepEqual(root[k], meta[k]) {
			t.Errorf("%s differs from lora_meta.json (%d vs %d entries)", k, len(root[k].([]any)), len(meta[k].([]any)))
		}
	}
	for _, k := range []string{"rank_unet", "rank_vae"} {
		if got, want := root[k], int64(meta[k].(float64)); got != want {
			t.Errorf("%s = %v, want %d", k, got, want)
		}
	}
	for _, part := range []struct {
		key, file string
		n         int
	}{{"state_dict_unet", "state_dict_unet.safetensors", 516}, {"state_dict_vae", "state_dict_vae.safetensors", 62}} {
		src, err := f.Source(part.key)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := OpenSafetensors(filepath.Join("../testdata/osediff-tiny/lora", part.file))
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Close()
		if !reflect.DeepEqual(src.Keys(), ref.Keys()) || len(src.Keys()) != part.n {
			t.Fatalf("%s: %d keys, safetensors %d, want %d", part.key, len(src.Keys()), len(ref.Keys()), part.n)
		}
		for _, k := range src.Keys() {
			a, err := ReadTensor(src, k)
			if err != nil {
				t.Fatal(err)
			}
			b, err := ReadTensor(ref, k)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a.Shape(), b.Shape()) {
				t.Fatalf("%s.%s: shape %v vs %v", part.key, k, a.Shape(), b.Shape())
			}
			for i, v := range a.Data() {
				if math.Float32bits(v) != math.Float32bits(b.Data()[i]) {
					t.Fatalf("%s.%s[%d]: %v vs %v", part.key, k, i, v, b.Data()[i])
				}
			}
		}
	}
	// The root Source flattens the nested state dicts.
	all, err := f.Source()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(all.Keys()); n != 516+62 {
		t.Fatalf("root source has %d tensors", n)
	}
	if _, ok := all.Info("state_dict_unet.conv_in.base_layer.weight"); !ok {
		t.Fatal("flattened key missing")
	}
	if _, err := f.Source("rank_unet"); err == nil {
		t.Fatal("Source of an int accepted")
	}
	if _, err := f.Source("nope"); err == nil {
		t.Fatal("Source of a missing key accepted")
	}
}

type manifestEntry struct {
	DType  string `json:"dtype"`
	Shape  []int  `json:"shape"`
	SHA256 string `json:"sha256"`
}

// TestDAPEPth opens the RAM and DAPE checkpoints and checks every tensor's
// dtype, shape and sha256 against manifest.json.
func TestDAPEPth(t *testing.T) {
	var man struct {
		Ram struct {
			ZipEntries []string                 `json:"zip_entries"`
			TopLevel   []string                 `json:"top_level_keys"`
			Model      map[string]manifestEntry `json:"model"`
		} `json:"ram_tiny"`
		Dape struct {
			Keys map[string]manifestEntry `json:"keys"`
		} `json:"dape_tiny"`
	}
	if err := LoadJSON("../testdata/dape-tiny/weights/manifest.json", &man); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		path []string
		want map[string]manifestEntry
	}{
		{ramPth, []string{"model"}, man.Ram.Model},
		{dapePth, nil, man.Dape.Keys},
	}
	for _, tc := range tests {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			f, err := OpenTorch(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			src, err := f.Source(tc.path...)
			if err != nil {
				t.Fatal(err)
			}
			if len(src.Keys()) != len(tc.want) {
				t.Fatalf("%d tensors, manifest %d", len(src.Keys()), len(tc.want))
			}
			dtypes := map[string]DType{"float32": F32, "int64": I64}
			for _, k := range src.Keys() {
				w, ok := tc.want[k]
				if !ok {
					t.Fatalf("%s not in the manifest", k)
				}
				info, _ := src.Info(k)
				if info.DType != dtypes[w.DType] || !reflect.DeepEqual(info.Shape, w.Shape) && !(len(w.Shape) == 0 && len(info.Shape) == 0) {
					t.Fatalf("%s: %s %v, manifest %s %v", k, info.DType, info.Shape, w.DType, w.Shape)
				}
				var raw []byte
				if info.DType == I64 {
					v, _, err := ReadInt64(src, k)
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range v {
						raw = binary.LittleEndian.AppendUint64(raw, uint64(x))
					}
				} else {
					v, err := ReadTensor(src, k)
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range v.Data() {
						raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
					}
				}
				if h := sha256.Sum256(raw); hex.EncodeToString(h[:]) != w.SHA256 {
					t.Fatalf("%s: sha256 differs from the manifest", k)
				}
			}
		})
	}
	f, err := OpenTorch(ramPth)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var top []string
	for k := range f.Root().(map[string]any) {
		top = append(top, k)
	}
	if !reflect.DeepEqual(top, man.Ram.TopLevel) {
		t.Fatalf("ram top level %v, manifest %v", top, man.Ram.TopLevel)
	}
}

// pickle writes pickle opcodes by hand.
type pickle struct{ bytes.Buffer }

func (p *pickle) op(b ...byte) *pickle { p.Write(b); return p }
func (p *pickle) global(mod, name string) *pickle {
	p.WriteString("c" + mod + "\n" + name + "\n")
	return p
}
func (p *pickle) str(s string) *pickle {
	p.WriteByte('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}
func (p *pickle) int(v int) *pickle {
	p.WriteByte('J')
	binary.Write(p, binary.LittleEndian, int32(v))
	return p
}
func (p *pickle) ints(v ...int) *pickle {
	p.op('(')
	for _, x := range v {
		p.int(x)
	}
	return p.op('t')
}

// tensorPickle is {name: _rebuild_tensor_v2(storage key, offset, size, stride)}.
func tensorPickle(name, storageClass, key string, numel, offset int, size, stride []int) []byte {
	p := &pickle{}
	p.op(0x80, 2, '}').str(name)
	p.global("torch._utils", "_rebuild_tensor_v2").op('(')
	p.op('(').str("storage").global("torch", storageClass).str(key).str("cpu").int(numel).op('t', 'Q')
	p.int(offset).ints(size...).ints(stride...).op(0x89).global("collections", "OrderedDict").op(')', 'R', 't', 'R')
	p.op('s', '.')
	return p.Bytes()
}

// torchZip writes a torch.save-style archive.
func torchZip(t testing.TB, pkl []byte, storages map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, b []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	add("archive/data.pkl", pkl)
	add("archive/byteorder", []byte("little"))
	keys := make([]string, 0, len(storages))
	for k := range storages {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add("archive/data/"+k, storages[k])
	}
	add("archive/version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func f32Bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func writeTemp(t *testing.T, name string, b []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTorchStrided reads non-contiguous and offset views.
func TestTorchStrided(t *testing.T) {
	data := f32Bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
	tests := []struct {
		name           string
		offset         int
		size, stride   []int
		want           []float32
		storage, class string
	}{
		{name: "contiguous", offset: 0, size: []int{3, 4}, stride: []int{4, 1}, want: []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}},
		{name: "offset", offset: 1, size: []int{2, 2}, stride: []int{2, 1}, want: []float32{1, 2, 3, 4}},
		{name: "transposed", offset: 0, size: []int{4, 3}, stride: []int{1, 4}, want: []float32{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}},
		{name: "transposed offset", offset: 1, size: []int{2, 3}, stride: []int{1, 4}, want: []float32{1, 5, 9, 2, 6, 10}},
		{name: "broadcast", offset: 5, size: []int{2, 3}, stride: []int{0, 1}, want: []float32{5, 6, 7, 5, 6, 7}},
		{name: "scalar", offset: 12, size: nil, stride: nil, want: []float32{12}},
		{name: "empty", offset: 0, size: []int{0, 3}, stride: []int{3, 1}, want: []float32{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, "x.pth", torchZip(t, tensorPickle("w", "FloatStorage", "0", 13, tc.offset, tc.size, tc.stride), map[string][]byte{"0": data}))
			f, err := OpenTorch(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			src, err := f.Source()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadTensor(src, "w")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Data(), tc.want) {
				t.Fatalf("got %v, want %v", got.Data(), tc.want)
			}
		})
	}
}

// TestTorchMalformed covers storages that do not fit their tensors.
func TestTorchMalformed(t *testing.T) {
	data := f32Bytes(0, 1, 2, 3)
	tests := []struct {
		name string
		file []byte
		want error
	}{
		{"view past storage", torchZip(t, tensorPickle("w", "FloatStorage", "0", 4, 1, []int{4}, []int{1}), map[string][]byte{"0": data}), ErrMalformed},
		{"stride past storage", torchZip(t, tensorPickle("w", "FloatStorage", "0", 4, 0, []int{2, 2}, []int{3, 1}), map[string][]byte{"0": data}), ErrMalformed},
		{"negative stride", torchZip(t, tensorPickle("w", "FloatStorage", "0", 4, 3, []int{4}, []int{-1}), map[string][]byte{"0": data}), ErrMalformed},
		{"huge size", torchZip(t, tensorPickle("w", "FloatStorage", "0", 4, 0, []int{1 << 30, 1 << 30, 1 << 30}, []int{0, 0, 0}), map[string][]byte{"0": data}), ErrMalformed},
		{"numel past entry", torchZip(t, tensorPickle("w", "FloatStorage", "0", 5, 0, []int{5}, []int{1}), map[string][]byte{"0": data}), ErrMalformed},
		{"missing entry", torchZip(t, tensorPickle("w", "FloatStorage", "1", 4, 0, []int{4}, []int{1}), map[string][]byte{"0": data}), ErrMalformed},
		{"unknown storage", torchZip(t, tensorPickle("w", "ComplexFloatStorage", "0", 4, 0, []int{4}, []int{1}), map[string][]byte{"0": data}), ErrForbidden},
		{"truncated pickle", torchZip(t, tensorPickle("w", "FloatStorage", "0", 4, 0, []int{4}, []int{1})[:40], map[string][]byte{"0": data}), ErrMalformed},
		{"no data.pkl", func() []byte {
			var b bytes.Buffer
			zw := zip.NewWriter(&b)
			zw.Create("x/other")
			zw.Close()
			return b.Bytes()
		}(), ErrMalformed},
		{"legacy format", append([]byte{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}, '.'), ErrLegacyTorch},
		{"not a checkpoint", []byte("hello"), ErrMalformed},
		{"corrupt zip", []byte("PK\x03\x04garbage"), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := OpenTorch(writeTemp(t, "bad.pth", tc.file))
			if err == nil {
				f.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestMaliciousPickle feeds pickles that would run code in Python: each is
// refused, naming what it asked for, and nothing runs.
func TestMaliciousPickle(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	cmd := "touch " + marker
	call := func(mod, name string, args ...string) []byte {
		p := &pickle{}
		p.op(0x80, 2).global(mod, name).op('(')
		for _, a := range args {
			p.str(a)
		}
		return p.op('t', 'R', '.').Bytes()
	}
	stackGlobal := func(mod, name string) []byte {
		p := &pickle{}
		p.op(0x80, 4).str(mod).str(name).op(0x93).op('(').str(cmd).op('t', 'R', '.')
		return p.Bytes()
	}
	// A real state dict whose tensor's backward hooks smuggle os.system.
	hidden := func() []byte {
		p := &pickle{}
		p.op(0x80, 2, '}').str("w")
		p.global("torch._utils", "_rebuild_tensor_v2").op('(')
		p.op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).op('t', 'Q')
		p.int(0).ints(4).ints(1).op(0x89).global("os", "system").op('(').str(cmd).op('t', 'R', 't', 'R')
		return p.op('s', '.').Bytes()
	}
	tests := []struct {
		name   string
		pkl    []byte
		naming string
	}{
		{"os.system", call("os", "system", cmd), "os.system"},
		{"posix.system", call("posix", "system", cmd), "posix.system"},
		{"nt.system", call("nt", "system", cmd), "nt.system"},
		{"builtins.eval", call("builtins", "eval", "__import__('os').system('"+cmd+"')"), "builtins.eval"},
		{"builtins.exec", call("builtins", "exec", "import os"), "builtins.exec"},
		{"__builtin__.eval", call("__builtin__", "eval", "1"), "__builtin__.eval"},
		{"builtins.getattr", call("builtins", "getattr", "x", "y"), "builtins.getattr"},
		{"subprocess.Popen", call("subprocess", "Popen", cmd), "subprocess.Popen"},
		{"subprocess.check_output", call("subprocess", "check_output", cmd), "subprocess.check_output"},
		{"torch.load", call("torch", "load", "x"), "torch.load"},
		{"numpy reconstruct", call("numpy.core.multiarray", "_reconstruct"), "numpy.core.multiarray._reconstruct"},
		{"stack global", stackGlobal("os", "system"), "os.system"},
		{"inside a state dict", hidden(), "os.system"},
		{"INST", []byte("(S'" + cmd + "'\nios\nsystem\n."), "INST"},
		{"OBJ", (&pickle{}).op('(').global("os", "system").str(cmd).op('o', '.').Bytes(), "os.system"},
		{"EXT1", []byte{0x80, 2, 0x82, 1, '.'}, "EXT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenTorch(writeTemp(t, "evil.pth", torchZip(t, tc.pkl, map[string][]byte{"0": f32Bytes(1, 2, 3, 4)})))
			if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), tc.naming) {
				t.Fatalf("error %v, want ErrForbidden naming %q", err, tc.naming)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the payload ran")
			}
		})
	}
}

// TestUnpickleValues covers the plain values torch.save may store.
func TestUnpickleValues(t *testing.T) {
	p := &pickle{}
	p.op(0x80, 2, '}')
	p.str("list").op(']', '(').int(1).int(-2).op('e')
	p.str("tuple").op('(').str("a").op(0x88, 'N', 't')
	p.str("float").op('G').op(0x3f, 0xf8, 0, 0, 0, 0, 0, 0) // 1.5
	p.str("long").op(0x8a, 8, 0, 0, 0, 0, 0, 0, 0x80, 0xff)
	p.str("neg").op(0x8a, 1, 0xff)
	p.str("odict").global("collections", "OrderedDict").op(')', 'R', 'q', 7)
	p.op('(').str("k").int(3).op('u')
	p.str("again").op('h', 7)
	p.str("ukey").op('}', 'K', 5, 'K', 6, 's')
	p.str("bytes").op('C', 2, 'h', 'i')
	p.str("set").op(0x8f, '(').int(1).op(0x90)
	p.op('u', '.')
	// The top-level SETITEMS needs a MARK after the dict.
	b := p.Bytes()
	b = append(b[:3], append([]byte{'('}, b[3:]...)...)
	v, err := unpickle(b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := toPlain(v)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"list": []any{int64(1), int64(-2)}, "tuple": []any{"a", true, nil}, "float": 1.5,
		"long": int64(-0x80000000000000), "neg": int64(-1),
		"odict": map[string]any{"k": int64(3)}, "again": map[string]any{"k": int64(3)},
		"ukey": map[string]any{"5": int64(6)}, "bytes": []byte("hi"), "set": []any{int64(1)},
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		t.Fatalf("got %s", gj)
	}
	// A list that contains itself is refused, not followed forever.
	self := []byte{0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'}
	v, err = unpickle(self, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := toPlain(v); !errors.Is(err, ErrMalformed) {
		t.Fatalf("self-reference: %v", err)
	}
	// Billion laughs: 60 levels of a list holding the previous one twice
	// converts in linear time.
	bl := &pickle{}
	bl.op(0x80, 2, ']', 'q', 0)
	for i := 1; i <= 60; i++ {
		bl.op(']', '(', 'h', byte(i-1), 'h', byte(i-1), 'e', 'q', byte(i))
	}
	bl.op('.')
	v, err = unpickle(bl.Bytes(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := toPlain(v); err != nil {
		t.Fatal(err)
	}
}

// TestFlattenShared: a dict that holds one sub-dict under two keys, 30
// levels deep (2^30 paths), is refused quickly instead of walked.
func TestFlattenShared(t *testing.T) {
	d := map[string]any{"w": &TorchTensor{}}
	for i := 0; i < 30; i++ {
		d = map[string]any{"a": d, "b": d}
	}
	if err := flatten(d, "", 0, map[string]*TorchTensor{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}
