package checkpoint

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"testing"
)

// FuzzSafetensorsHeader: any input is either refused with an error or gives
// tensors whose byte ranges lie inside the data section and read cleanly.
func FuzzSafetensorsHeader(f *testing.F) {
	// Small valid files made of the smallest tensors of the testdata files
	// (large seeds make the fuzzer crawl).
	for _, p := range []string{
		"../testdata/osediff-tiny/ref/tokenizer.safetensors",
		"../testdata/osediff-tiny/ref/scheduler.safetensors",
		"../testdata/osediff-tiny/lora/state_dict_vae.safetensors",
		"../testdata/osediff-tiny/ref/case_main_pipeline.safetensors",
	} {
		f.Add(smallSeed(f, p, 3))
	}
	f.Add(rawSafetensors(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"b":{"dtype":"I64","shape":[],"data_offsets":[4,12]}}`, make([]byte, 12)))
	f.Add(rawSafetensors(`{"a":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]}}`, nil))
	f.Fuzz(func(t *testing.T, file []byte) {
		st, err := parseSafetensors(file)
		if err != nil {
			return
		}
		for _, k := range st.Keys() {
			info, ok := st.Info(k)
			if !ok {
				t.Fatalf("listed key %q has no info", k)
			}
			e := st.entries[k]
			if e.begin < 0 || e.end > int64(len(st.data)) || e.end-e.begin != int64(info.Numel()*info.DType.Size()) {
				t.Fatalf("%q: bad range [%d, %d) for %v", k, e.begin, e.end, info)
			}
			if err := st.ReadFloat32(k, make([]float32, info.Numel())); err != nil {
				t.Fatalf("%q: %v", k, err)
			}
		}
	})
}

// smallSeed re-packs the n smallest tensors of a safetensors file.
func smallSeed(f *testing.F, path string, n int) []byte {
	st, err := OpenSafetensors(path)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	keys := st.Keys()
	sort.Slice(keys, func(i, j int) bool {
		a, _ := st.Info(keys[i])
		b, _ := st.Info(keys[j])
		return a.Numel()*a.DType.Size() < b.Numel()*b.DType.Size()
	})
	hdr := map[string]any{}
	if m := st.Metadata(); m != nil {
		hdr["__metadata__"] = m
	}
	var data []byte
	for _, k := range keys[:min(n, len(keys))] {
		b, info, err := st.Bytes(k)
		if err != nil {
			f.Fatal(err)
		}
		hdr[k] = map[string]any{"dtype": info.DType, "shape": append([]int{}, info.Shape...), "data_offsets": []int{len(data), len(data) + len(b)}}
		data = append(data, b...)
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		f.Fatal(err)
	}
	return rawSafetensors(string(hb), data)
}

// fuzzStorage resolves any storage id to an in-memory storage.
func fuzzPersist(pid any) (any, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("%w: pid", ErrMalformed)
	}
	st, ok1 := t[1].(storageType)
	n, ok2 := t[4].(int64)
	if !ok1 || !ok2 || n < 0 || n > 1<<16 {
		return nil, fmt.Errorf("%w: pid", ErrMalformed)
	}
	return &torchStorage{dtype: st.dtype, numel: n, off: -1}, nil
}

func dataPkl(f *testing.F, path string) []byte {
	zr, err := zip.OpenReader(path)
	if err != nil {
		f.Fatal(err)
	}
	defer zr.Close()
	for _, e := range zr.File {
		if bytes.HasSuffix([]byte(e.Name), []byte("/data.pkl")) {
			rc, err := e.Open()
			if err != nil {
				f.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				f.Fatal(err)
			}
			return b
		}
	}
	f.Fatalf("%s has no data.pkl", path)
	return nil
}

// FuzzUnpickle: the restricted unpickler never panics, never loops, and
// every tensor it builds lies inside its storage.
func FuzzUnpickle(f *testing.F) {
	// The DAPE pickle whole, the first 2 KiB of the others (large seeds make
	// the fuzzer crawl).
	f.Add(dataPkl(f, dapePth))
	for _, p := range []string{osediffPkl, ramPth} {
		f.Add(append(dataPkl(f, p)[:2048], '.'))
	}
	f.Add(tensorPickle("w", "HalfStorage", "0", 13, 1, []int{4, 3}, []int{1, 4}))
	f.Add([]byte{0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'})
	f.Add([]byte("(S'x'\nios\nsystem\n."))
	f.Add([]byte{0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, 0x8c, 2, 'o', 's', 0x94, 0x8c, 6, 's', 'y', 's', 't', 'e', 'm', 0x93, '.'})
	f.Fuzz(func(t *testing.T, pkl []byte) {
		v, err := unpickle(pkl, fuzzPersist, rebuildTensor)
		if err != nil {
			return
		}
		p, err := toPlain(v)
		if err != nil {
			return
		}
		seen := map[uintptr]bool{}
		var check func(v any, depth int)
		check = func(v any, depth int) {
			switch c := v.(type) {
			case map[string]any, []any:
				if rv := reflect.ValueOf(c); rv.Len() > 0 {
					if seen[rv.Pointer()] {
						return
					}
					seen[rv.Pointer()] = true
				}
			}
			if depth > maxPickleDepth+1 {
				t.Fatal("too deep")
			}
			switch v := v.(type) {
			case *TorchTensor:
				n := v.Numel()
				if n == 0 {
					return
				}
				last := v.Offset
				for i, d := range v.Shape {
					last += (d - 1) * v.Stride[i]
				}
				if v.Offset < 0 || int64(last) >= v.storage.numel {
					t.Fatalf("tensor %v/%v at %d outside a storage of %d", v.Shape, v.Stride, v.Offset, v.storage.numel)
				}
			case map[string]any:
				for _, x := range v {
					check(x, depth+1)
				}
			case []any:
				for _, x := range v {
					check(x, depth+1)
				}
			}
		}
		check(p, 0)
		if m, ok := p.(map[string]any); ok {
			_ = flatten(m, "", 0, map[string]*TorchTensor{})
		}
	})
}
