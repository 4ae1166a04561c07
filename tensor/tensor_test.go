package tensor

import (
	"math"
	"testing"
	"unsafe"
)

func seq(shape ...int) *Tensor {
	t := New(shape...)
	for i := range t.Data() {
		t.Data()[i] = float32(i)
	}
	return t
}

func TestViews(t *testing.T) {
	x := seq(2, 3, 4) // [[[0..3],[4..7],[8..11]],[[12..]]]
	cases := []struct {
		name  string
		view  *Tensor
		shape []int
		want  []float32
		cont  bool
	}{
		{"reshape", x.Reshape(6, 4), []int{6, 4}, nil, true},
		{"reshape -1", x.Reshape(-1, 12), []int{2, 12}, nil, true},
		{"permute", x.Permute(2, 0, 1), []int{4, 2, 3}, []float32{0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21}, false},
		{"narrow", x.Narrow(1, 1, 2), []int{2, 2, 4}, []float32{4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23}, false},
		{"slice last", x.Slice(2, 1, 3), []int{2, 3, 2}, []float32{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22}, false},
		{"select", x.Select(0, 1), []int{3, 4}, []float32{12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}, true},
		{"select mid", x.Select(1, 2), []int{2, 4}, []float32{8, 9, 10, 11, 20, 21, 22, 23}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !SameShape(c.view.Shape(), c.shape) {
				t.Fatalf("shape %v, want %v", c.view.Shape(), c.shape)
			}
			if c.view.IsContiguous() != c.cont {
				t.Fatalf("contiguous %v, want %v", c.view.IsContiguous(), c.cont)
			}
			got := c.view.Contiguous().Data()
			if c.want == nil {
				c.want = x.Data()
			}
			for i := range c.want {
				if got[i] != c.want[i] {
					t.Fatalf("element %d: %v, want %v (got %v)", i, got[i], c.want[i], got)
				}
			}
		})
	}
	// Views share storage.
	v := x.Narrow(2, 1, 1)
	v.Set(-1, 0, 0, 0)
	if x.At(0, 0, 1) != -1 {
		t.Fatal("narrow view does not share storage")
	}
	// CopyFrom into a strided view.
	dst := New(2, 3, 4)
	dst.Permute(2, 0, 1).CopyFrom(x.Permute(2, 0, 1))
	for i, v := range dst.Data() {
		if v != x.Data()[i] {
			t.Fatalf("CopyFrom: %d", i)
		}
	}
	// CopyFrom between two strided views (no dense copy of the source),
	// against an element-by-element copy, at awkward sizes.
	for _, c := range []struct{ d0, d1, d2 int }{{1, 1, 1}, {0, 3, 5}, {3, 0, 2}, {2, 5, 17}, {3, 7, 33}, {1, 65, 3}} {
		src := seq(c.d0+1, c.d1+2, c.d2+3).Narrow(0, 1, c.d0).Narrow(1, 2, c.d1).Narrow(2, 1, c.d2) // [d0, d1, d2] strided
		for _, perm := range [][]int{{0, 1, 2}, {2, 0, 1}, {1, 2, 0}} {
			big := New(c.d2+4, c.d0+3, c.d1+5) // a strided destination
			dst := big.Narrow(0, 3, c.d2).Narrow(1, 1, c.d0).Narrow(2, 2, c.d1).Permute(1, 2, 0).Permute(perm...)
			view := src.Permute(perm...)
			dst.CopyFrom(view)
			want, got := view.Clone().Data(), dst.Clone().Data()
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("CopyFrom %v perm %v: element %d is %v, want %v", c, perm, i, got[i], want[i])
				}
			}
		}
	}
	// Zero-size and scalar tensors.
	if New(0, 3).Contiguous().Numel() != 0 || New().Numel() != 1 {
		t.Fatal("zero-size or scalar")
	}
}

func TestPanicsOnMisuse(t *testing.T) {
	for name, fn := range map[string]func(){
		"reshape size":   func() { seq(2, 3).Reshape(4, 2) },
		"bad permute":    func() { seq(2, 3).Permute(0, 0) },
		"narrow range":   func() { seq(2, 3).Narrow(1, 2, 2) },
		"index":          func() { seq(2, 3).At(2, 0) },
		"data of a view": func() { seq(2, 3).Permute(1, 0).Data() },
		"fromdata size":  func() { FromData(make([]float32, 5), 2, 3) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			fn()
		})
	}
}

func TestHalfConversions(t *testing.T) {
	// Every float16 value round-trips exactly through float32.
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			if back := F32ToF16(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %04x -> %04x", h, back)
			}
			continue
		}
		if back := F32ToF16(f); back != uint16(h) {
			t.Fatalf("f16 %04x -> %v -> %04x", h, f, back)
		}
	}
	cases := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e-8, 0}, {5.960464477539063e-08, 1},
		{1.0009765625 / 2 * 2, 0x3c01}, {1 + 1.0/2048, 0x3c00} /* tie to even */, {1 + 3.0/2048, 0x3c02},
	}
	for _, c := range cases {
		if got := F32ToF16(c.f); got != c.want {
			t.Errorf("F32ToF16(%v) = %04x, want %04x", c.f, got, c.want)
		}
	}
	for _, c := range []struct {
		f    float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {1 + 1.0/256, 0x3f80} /* tie to even */, {1 + 3.0/256, 0x3f82}, {float32(math.Inf(1)), 0x7f80}} {
		if got := F32ToBF16(c.f); got != c.want {
			t.Errorf("F32ToBF16(%v) = %04x, want %04x", c.f, got, c.want)
		}
		if back := BF16ToF32(c.want); F32ToBF16(back) != c.want {
			t.Errorf("bf16 %04x does not round-trip", c.want)
		}
	}
	dst := make([]float32, 3)
	F16SliceToF32(dst, []uint16{0x3c00, 0xc000, 0})
	BF16SliceToF32(dst[:1], []uint16{0x4000})
	if dst[0] != 2 || dst[1] != -2 || dst[2] != 0 {
		t.Fatal(dst)
	}
}

// Recycled buffers go to the next AllocDirty that fits them (at most 1/8
// larger), a miss drops every waiting buffer, small buffers are left to the
// collector, and the bytes waiting stay under the bound.
func TestRecycle(t *testing.T) {
	defer PoisonDirty(PoisonDirty(false))
	ReleaseRecycled()
	const big = hugeMin / 4 // values in the smallest recycled buffer
	const none = 1 << 62    // no bound
	same := func(a, b []float32) bool { return unsafe.SliceData(a) == unsafe.SliceData(b) }

	a := Alloc(9 * big)
	Recycle(a[:big], none)
	if RecycledBytes() != 9*big*4 {
		t.Fatalf("%d bytes wait, want %d", RecycledBytes(), 9*big*4)
	}
	hits := RecycleHits()
	if b := AllocDirty(8 * big); !same(a, b) || len(b) != 8*big || RecycleHits() != hits+1 || RecycledBytes() != 0 {
		t.Fatalf("AllocDirty(%d) did not reuse the recycled buffer", 8*big)
	}

	Recycle(a, none)
	if b := AllocDirty(8*big - 1); same(a, b) {
		t.Error("a buffer more than 1/8 too large was reused")
	}
	if RecycledBytes() != 0 {
		t.Errorf("a miss kept %d bytes waiting", RecycledBytes())
	}
	Recycle(a, none)
	if b := AllocDirty(9*big + 1); same(a, b) || RecycledBytes() != 0 {
		t.Errorf("a larger miss kept the smaller buffer (%d bytes wait)", RecycledBytes())
	}

	Recycle(make([]float32, big-1), none)
	if RecycledBytes() != 0 {
		t.Error("a small buffer was kept")
	}

	bufs := [][]float32{Alloc(big), Alloc(big), Alloc(big)}
	for _, b := range bufs {
		Recycle(b, 2*big*4)
	}
	if RecycledBytes() != 2*big*4 {
		t.Errorf("%d bytes wait, want the bound %d", RecycledBytes(), 2*big*4)
	}
	if b := AllocDirty(big); !same(b, bufs[1]) && !same(b, bufs[2]) {
		t.Error("the oldest buffer was kept over the bound")
	}
	ReleaseRecycled()
	if RecycledBytes() != 0 {
		t.Error("ReleaseRecycled left buffers")
	}

	PoisonDirty(true)
	for _, v := range Empty(2, 3).Data() {
		if v == v {
			t.Fatal("a poisoned buffer holds a number")
		}
	}
}
