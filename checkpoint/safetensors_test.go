package checkpoint

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// rawSafetensors builds a file from a header string and a data section.
func rawSafetensors(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestSafetensorsRoundTrip(t *testing.T) {
	vals := []float32{0, 1, -2, 0.5, -0.25, 3, 1024, -65504, 6.103515625e-05, 5.960464477539063e-08, 0.1, 1.0 / 3}
	src := map[string]*tensor.Tensor{
		"a.weight": tensor.FromData(vals, 3, 4),
		"a.bias":   tensor.FromData(vals[:4], 4),
		"scalar":   tensor.FromData([]float32{7}),
		"empty":    tensor.New(0, 5),
		"strided":  tensor.FromData(vals, 3, 4).Permute(1, 0),
	}
	tests := []struct {
		dtype DType
		round func(float32) float32
	}{
		{F32, func(v float32) float32 { return v }},
		{F16, func(v float32) float32 { return tensor.F16ToF32(tensor.F32ToF16(v)) }},
		{BF16, func(v float32) float32 { return tensor.BF16ToF32(tensor.F32ToBF16(v)) }},
	}
	for _, tc := range tests {
		t.Run(string(tc.dtype), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.safetensors")
			if err := SaveSafetensors(p, src, tc.dtype, map[string]string{"format": "pt"}); err != nil {
				t.Fatal(err)
			}
			st, err := OpenSafetensors(p)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if got := strings.Join(st.Keys(), ","); got != "a.bias,a.weight,empty,scalar,strided" {
				t.Fatalf("keys %s", got)
			}
			if st.Metadata()["format"] != "pt" {
				t.Fatalf("metadata %v", st.Metadata())
			}
			for name, want := range src {
				info, ok := st.Info(name)
				if !ok || info.DType != tc.dtype || !tensor.SameShape(info.Shape, want.Shape()) {
					t.Fatalf("%s: info %+v", name, info)
				}
				got, err := ReadTensor(st, name)
				if err != nil {
					t.Fatal(err)
				}
				w := want.Contiguous().Data()
				for i, v := range got.Data() {
					if math.Float32bits(v) != math.Float32bits(tc.round(w[i])) {
						t.Fatalf("%s[%d] = %v, want %v", name, i, v, tc.round(w[i]))
					}
				}
			}
			if _, err := ReadTensor(st, "nope"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("missing tensor: %v", err)
			}
			if err := st.ReadFloat32("a.bias", make([]float32, 3)); err == nil {
				t.Fatal("short destination accepted")
			}
			st.Close()
			if err := st.ReadFloat32("a.bias", make([]float32, 4)); err == nil {
				t.Fatal("read after Close accepted")
			}
		})
	}
}

// TestSafetensorsUnaligned reads F32 data starting at an odd address and
// integer tensors.
func TestSafetensorsUnaligned(t *testing.T) {
	var data []byte
	for _, v := range []float32{1.5, -2.25, 3} {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	for _, v := range []int64{49406, -1, 1 << 40} {
		data = binary.LittleEndian.AppendUint64(data, uint64(v))
	}
	hdr := `{"f":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"ids":{"dtype":"I64","shape":[1,3],"data_offsets":[12,36]}}`
	p := filepath.Join(t.TempDir(), "u.safetensors")
	if err := os.WriteFile(p, rawSafetensors(hdr+" ", data), 0o644); err != nil { // odd header length
		t.Fatal(err)
	}
	st, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := ReadTensor(st, "f")
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Data(); d[0] != 1.5 || d[1] != -2.25 || d[2] != 3 {
		t.Fatalf("f = %v", d)
	}
	ids, shape, err := ReadInt64(st, "ids")
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != 49406 || ids[1] != -1 || ids[2] != 1<<40 || !tensor.SameShape(shape, []int{1, 3}) {
		t.Fatalf("ids = %v %v", ids, shape)
	}
	if _, _, err := ReadInt64(st, "f"); err == nil {
		t.Fatal("non-integer float read as int64")
	}
}

func TestSafetensorsMalformed(t *testing.T) {
	data16 := make([]byte, 16)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"short", []byte{1, 2, 3}, "too short"},
		{"header limit", func() []byte {
			b := make([]byte, 16)
			binary.LittleEndian.PutUint64(b, MaxSafetensorsHeader+1)
			return b
		}(), "limit"},
		{"header past end", func() []byte {
			b := rawSafetensors("{}", nil)
			binary.LittleEndian.PutUint64(b, 100)
			return b
		}(), "past the end"},
		{"huge header length", func() []byte {
			b := make([]byte, 16)
			binary.LittleEndian.PutUint64(b, math.MaxUint64)
			return b
		}(), "limit"},
		{"not json", rawSafetensors("{nope", data16), "JSON"},
		{"array", rawSafetensors("[]", data16), "not a JSON object"},
		{"unclosed", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`, data16), "JSON"},
		{"trailing", rawSafetensors(`{} {}`, data16), "trailing"},
		{"duplicate", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data16), "duplicate"},
		{"unknown dtype", rawSafetensors(`{"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}`, data16), "unsupported dtype"},
		{"unknown field", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, data16), "unknown field"},
		{"missing field", rawSafetensors(`{"a":{"dtype":"F32","shape":[1]}}`, data16), "needs dtype"},
		{"negative dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}`, data16), "negative"},
		{"overflow dims", rawSafetensors(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}}`, data16), "too large"},
		{"zero times huge", rawSafetensors(`{"a":{"dtype":"F32","shape":[0,9223372036854775807,9223372036854775807],"data_offsets":[0,0]}}`, data16), "too large"},
		{"float dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, data16), "tensor"},
		{"offsets count", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, data16), "2"},
		{"offset past end", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`, data16), "outside"},
		{"reversed offsets", rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, data16), "outside"},
		{"negative offset", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, data16), "outside"},
		{"wrong length", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}`, data16), "needs 8 bytes"},
		{"overlap", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, data16), "overlap"},
		{"bad metadata", rawSafetensors(`{"__metadata__":{"a":1}}`, data16), "__metadata__"},
		{"empty name", rawSafetensors(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, data16), "empty tensor name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseSafetensorsHeader(tc.file)
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrMalformed mentioning %q", err, tc.want)
			}
			p := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := os.WriteFile(p, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			if st, err := OpenSafetensors(p); err == nil {
				st.Close()
				t.Fatal("OpenSafetensors accepted it")
			}
		})
	}
}

// TestSafetensorsGroundTruth opens the reference LoRA state dict.
func TestSafetensorsGroundTruth(t *testing.T) {
	st, err := OpenSafetensors("../testdata/osediff-tiny/lora/state_dict_unet.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := len(st.Keys()); n != 516 {
		t.Fatalf("%d tensors, want 516", n)
	}
	w, err := ReadTensor(st, "conv_in.base_layer.weight")
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(w.Shape(), []int{16, 4, 3, 3}) {
		t.Fatalf("conv_in.base_layer.weight shape %v", w.Shape())
	}
	var sum float64
	for _, v := range w.Data() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite weight")
		}
		sum += math.Abs(float64(v))
	}
	if sum == 0 {
		t.Fatal("all-zero weight")
	}
}
