package lora

import (
	"slices"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

func seq(n int, start, step float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = start + float32(i)*step
	}
	return out
}

func TestMergeLinear(t *testing.T) {
	tests := []struct {
		name  string
		w     *tensor.Tensor
		a, b  *tensor.Tensor
		scale float32
		want  []float32 // w after the merge, by hand
	}{
		{
			// b@a = [[1*1, 1*2, 1*3], [2*1, 2*2, 2*3]]
			"rank 1", tensor.FromData([]float32{1, 1, 1, 1, 1, 1}, 2, 3),
			tensor.FromData([]float32{1, 2, 3}, 1, 3), tensor.FromData([]float32{1, 2}, 2, 1), 0.5,
			[]float32{1.5, 2, 2.5, 2, 3, 4},
		},
		{
			// a = [[1,0],[0,1]], b = [[1,2],[3,4]]: b@a = b
			"rank 2", tensor.New(2, 2),
			tensor.FromData([]float32{1, 0, 0, 1}, 2, 2), tensor.FromData([]float32{1, 2, 3, 4}, 2, 2), 2,
			[]float32{2, 4, 6, 8},
		},
		{
			// a transposed view: a = [[1,3],[2,4]] stored column-major
			"strided a", tensor.New(1, 2),
			tensor.FromData([]float32{1, 2, 3, 4}, 2, 2).Permute(1, 0), tensor.FromData([]float32{1, 1}, 1, 2), 1,
			[]float32{3, 7},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := MergeLinear(tc.w, tc.a, tc.b, tc.scale); err != nil {
				t.Fatal(err)
			}
			if got := tc.w.Data(); !slices.Equal(got, tc.want) {
				t.Fatalf("w = %v, want %v", got, tc.want)
			}
		})
	}
}

// A loralib MergedLinear on a fused qkv [3d, d] with LoRA on q and v only:
// merging into row views must leave k untouched.
func TestMergeLinearRowViews(t *testing.T) {
	const d = 2
	qkv := tensor.FromData(seq(3*d*d, 0, 1), 3*d, d)
	a := tensor.FromData([]float32{1, 0, 0, 1}, 2, d) // rows 0: q, 1: v (rank 1 each)
	b := tensor.FromData([]float32{1, 2, 3, 4}, 2*d, 1)
	if err := MergeLinear(qkv.Narrow(0, 0, d), a.Narrow(0, 0, 1), b.Narrow(0, 0, d), 1); err != nil {
		t.Fatal(err)
	}
	if err := MergeLinear(qkv.Narrow(0, 2*d, d), a.Narrow(0, 1, 1), b.Narrow(0, d, d), 1); err != nil {
		t.Fatal(err)
	}
	want := []float32{
		0 + 1, 1, 2 + 2, 3, // q += [1,2]ᵀ[1,0]
		4, 5, 6, 7, // k unchanged
		8, 9 + 3, 10, 11 + 4, // v += [3,4]ᵀ[0,1]
	}
	if got := qkv.Data(); !slices.Equal(got, want) {
		t.Fatalf("qkv = %v, want %v", got, want)
	}
	// A column range has dense rows (row stride 4): mergeable in place.
	w := tensor.New(2, 4)
	if err := MergeLinear(w.Narrow(1, 1, 2), tensor.FromData([]float32{1, 2}, 1, 2), tensor.FromData([]float32{1, 10}, 2, 1), 1); err != nil {
		t.Fatal(err)
	}
	if got, want := w.Data(), []float32{0, 1, 2, 0, 0, 10, 20, 0}; !slices.Equal(got, want) {
		t.Fatalf("column view merge: w = %v, want %v", got, want)
	}
	// A transposed view (column stride != 1) is not.
	if err := MergeLinear(tensor.New(2, 2).Permute(1, 0), tensor.New(1, 2), tensor.New(2, 1), 1); err == nil {
		t.Fatal("merge into a transposed view succeeded")
	}
}

func TestMergeConv(t *testing.T) {
	tests := []struct {
		name  string
		w     *tensor.Tensor
		a, b  *tensor.Tensor
		scale float32
		want  []float32
	}{
		{
			// 1×1: out 2, in 2, rank 1: delta[o,i] = b[o]*a[i]
			"1x1", tensor.New(2, 2, 1, 1),
			tensor.FromData([]float32{1, 2}, 1, 2, 1, 1), tensor.FromData([]float32{3, 4}, 2, 1, 1, 1), 1,
			[]float32{3, 6, 4, 8},
		},
		{
			// 3×3: out 1, in 1, rank 2: delta = 1*a0 + 2*a1, scale 0.5
			"3x3", tensor.FromData(seq(9, 0, 0), 1, 1, 3, 3),
			tensor.FromData(append(seq(9, 1, 0), seq(9, 0, 1)...), 2, 1, 3, 3), tensor.FromData([]float32{1, 2}, 1, 2, 1, 1), 0.5,
			[]float32{0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5},
		},
		{
			"b as a matrix", tensor.New(2, 1, 1, 1),
			tensor.FromData([]float32{2}, 1, 1, 1, 1), tensor.FromData([]float32{1, -1}, 2, 1), 1,
			[]float32{2, -2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := MergeConv(tc.w, tc.a, tc.b, tc.scale); err != nil {
				t.Fatal(err)
			}
			if got := tc.w.Data(); !slices.Equal(got, tc.want) {
				t.Fatalf("w = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMergeShapeErrors(t *testing.T) {
	tests := []struct {
		name    string
		merge   func(w, a, b *tensor.Tensor, s float32) error
		w, a, b *tensor.Tensor
		want    string
	}{
		{"linear rank", MergeLinear, tensor.New(2, 3, 1, 1), tensor.New(1, 3), tensor.New(2, 1), "linear merge wants"},
		{"linear in", MergeLinear, tensor.New(2, 3), tensor.New(1, 4), tensor.New(2, 1), "do not fit"},
		{"linear out", MergeLinear, tensor.New(2, 3), tensor.New(1, 3), tensor.New(3, 1), "do not fit"},
		{"linear r", MergeLinear, tensor.New(2, 3), tensor.New(2, 3), tensor.New(2, 1), "do not fit"},
		{"linear unbound", MergeLinear, tensor.Shaped(2, 3), tensor.New(1, 3), tensor.New(2, 1), "no data"},
		{"conv kernel", MergeConv, tensor.New(2, 3, 3, 3), tensor.New(1, 3, 1, 1), tensor.New(2, 1, 1, 1), "do not fit"},
		{"conv b kernel", MergeConv, tensor.New(2, 3, 3, 3), tensor.New(1, 3, 3, 3), tensor.New(2, 1, 3, 3), "do not fit"},
		{"conv rank", MergeConv, tensor.New(2, 3), tensor.New(1, 3), tensor.New(2, 1), "conv merge wants"},
		{"conv view", MergeConv, tensor.New(2, 4, 1, 1).Narrow(1, 0, 2), tensor.New(1, 2, 1, 1), tensor.New(2, 1, 1, 1), "contiguous"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.merge(tc.w, tc.a, tc.b, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
