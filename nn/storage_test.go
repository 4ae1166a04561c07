package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// roundF16 returns a copy of t with every value rounded to float16.
func roundF16(t *tensor.Tensor) *tensor.Tensor {
	c := t.Clone()
	for i, v := range c.Data() {
		c.Data()[i] = tensor.F16ToF32(tensor.F32ToF16(v))
	}
	return c
}

type storageModel struct {
	Lins  []*Linear
	Conv  *Conv2d
	Inner struct{ Conv *Conv2d }
	Norm  *GroupNorm
	Emb   *Embedding
}

// After SetModelStorage(StoreF16) every layer computes exactly what it
// computes in float32 with its weights rounded to float16, holds no float32
// weight data, and converting back restores the rounded weights. In BF16
// precision the packed copy is made from the float16 weights.
func TestStorageF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m := &storageModel{Lins: []*Linear{NewLinear(77, 45, true), NewLinear(64, 96, false)}, Conv: NewConv2d(5, 12, 3, 1, 1, true), Norm: NewGroupNorm(2, 4, 1e-5)}
	m.Inner.Conv = NewConv2d(8, 16, 3, 2, 1, true)
	m.Lins[0].Weight, m.Lins[0].Bias = randTensor(r, 45, 77), randTensor(r, 45)
	m.Lins[1].Weight = randTensor(r, 96, 64)
	m.Conv.Weight, m.Conv.Bias = randTensor(r, 12, 5, 3, 3), randTensor(r, 12)
	m.Inner.Conv.Weight, m.Inner.Conv.Bias = randTensor(r, 16, 8, 3, 3), randTensor(r, 16)
	m.Norm.Weight, m.Norm.Bias = randTensor(r, 4), randTensor(r, 4)
	m.Emb = &Embedding{Weight: randTensor(r, 10, 6)}
	refEmb := &Embedding{Weight: roundF16(m.Emb.Weight)}

	// References: the same layers with float16-rounded float32 weights.
	ref := []*Linear{{Weight: roundF16(m.Lins[0].Weight), Bias: m.Lins[0].Bias, In: 77, Out: 45}, {Weight: roundF16(m.Lins[1].Weight), In: 64, Out: 96}}
	refConv := &Conv2d{Weight: roundF16(m.Conv.Weight), Bias: m.Conv.Bias, P: m.Conv.P}
	refDown := &Conv2d{Weight: roundF16(m.Inner.Conv.Weight), Bias: m.Inner.Conv.Bias, P: m.Inner.Conv.P}
	x0, x1 := randTensor(r, 2, 19, 77), randTensor(r, 130, 64)
	xc, xd := randTensor(r, 2, 5, 9, 40), randTensor(r, 1, 8, 17, 32)

	rep, err := SetModelStorage(m, StoreF16)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Layers != 5 || rep.Params != 45*77+96*64+12*5*9+16*8*9+60 || rep.BytesAfter*2 != rep.BytesBefore {
		t.Fatalf("report %+v", rep)
	}
	if m.Lins[0].Weight.HasData() || m.Conv.Weight.HasData() || m.Inner.Conv.Weight.HasData() || !m.Norm.Weight.HasData() {
		t.Fatal("float32 weight data kept (or a norm converted)")
	}
	defer SetPrecision(SetPrecision(FP32))
	for _, p := range []Precision{FP32, BF16} {
		SetPrecision(p)
		pairs := []struct {
			name      string
			got, want *tensor.Tensor
		}{
			{"Linear", m.Lins[0].Forward(x0), ref[0].Forward(x0)},
			{"Linear no bias", m.Lins[1].Forward(x1), ref[1].Forward(x1)},
			{"Conv2d", m.Conv.Forward(xc), refConv.Forward(xc)},
			{"Conv2d stride 2", m.Inner.Conv.Forward(xd), refDown.Forward(xd)},
			{"Embedding", m.Emb.Forward([]int{3, 0, 9, 3}), refEmb.Forward([]int{3, 0, 9, 3})},
		}
		for _, pr := range pairs {
			for i, w := range pr.want.Data() {
				if g := pr.got.Data()[i]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%v %s: y[%d] = %g, want %g", p, pr.name, i, g, w)
				}
			}
		}
	}
	if _, err := SetModelStorage(m, StoreF32); err != nil {
		t.Fatal(err)
	}
	if m.Lins[0].Storage() != StoreF32 || !m.Lins[0].Weight.HasData() {
		t.Fatal("not converted back")
	}
	for i, v := range ref[0].Weight.Data() {
		if m.Lins[0].Weight.Data()[i] != v {
			t.Fatalf("weight %d = %g after the round trip, want %g", i, m.Lins[0].Weight.Data()[i], v)
		}
	}
}

func TestParseStorage(t *testing.T) {
	for in, want := range map[string]Storage{"fp32": StoreF32, "FP16": StoreF16, "half": StoreF16} {
		if got, err := ParseStorage(in); err != nil || got != want {
			t.Errorf("ParseStorage(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseStorage("int8"); err == nil {
		t.Error("int8 accepted")
	}
}

// StoreBF16 keeps float16 until the first bf16 Forward, then only the packed
// bf16 weights (on AVX512_BF16 machines): the outputs equal those of
// StoreF16 in BF16 precision, later Forwards run bf16 whatever the
// precision, and the layer can no longer be converted.
func TestStorageBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	mk := func() (*Linear, *Conv2d) {
		l := NewLinear(64, 96, true)
		l.Weight, l.Bias = randTensor(r, 96, 64), randTensor(r, 96)
		c := NewConv2d(6, 12, 3, 1, 1, true)
		c.Weight, c.Bias = randTensor(r, 12, 6, 3, 3), randTensor(r, 12)
		return l, c
	}
	l, c := mk()
	l16 := &Linear{Weight: l.Weight.Clone(), Bias: l.Bias, In: 64, Out: 96}
	c16 := &Conv2d{Weight: c.Weight.Clone(), Bias: c.Bias, P: c.P}
	for _, err := range []error{l.SetStorage(StoreBF16), c.SetStorage(StoreBF16), l16.SetStorage(StoreF16), c16.SetStorage(StoreF16)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if l.Storage() != StoreBF16 || c.Storage() != StoreBF16 {
		t.Fatalf("storage %v %v", l.Storage(), c.Storage())
	}
	xl, xc := randTensor(r, 19, 64), randTensor(r, 1, 6, 9, 17)
	defer SetPrecision(SetPrecision(BF16))
	wantL, wantC := l16.Forward(xl), c16.Forward(xc)
	gotL, gotC := l.Forward(xl), c.Forward(xc)
	sameT := func(what string, got, want *tensor.Tensor) {
		t.Helper()
		for i, w := range want.Data() {
			if math.Float32bits(got.Data()[i]) != math.Float32bits(w) {
				t.Fatalf("%s: y[%d] = %g, want %g", what, i, got.Data()[i], w)
			}
		}
	}
	sameT("Linear bf16", gotL, wantL)
	sameT("Conv2d bf16", gotC, wantC)
	if !BF16Native() {
		t.Log("no AVX512_BF16: StoreBF16 keeps float16 (its outputs are checked above)")
		return
	}
	if l.w16 != nil || c.w16 != nil || l.PackedBytes() == 0 || c.PackedBytes() == 0 {
		t.Fatal("float16 weights kept after packing")
	}
	SetPrecision(FP32)
	sameT("Linear packed-only in FP32 precision", l.Forward(xl), wantL)
	sameT("Conv2d packed-only in FP32 precision", c.Forward(xc), wantC)
	if err := l.SetStorage(StoreF32); err == nil {
		t.Error("converted packed-only Linear back to fp32")
	}
	if err := c.SetStorage(StoreF16); err == nil {
		t.Error("converted packed-only Conv2d back to fp16")
	}
	l.DropPacked()
	if l.PackedBytes() == 0 {
		t.Error("DropPacked dropped the only copy")
	}
	defer func() {
		if recover() == nil {
			t.Error("Mat of a packed-only layer did not panic")
		}
	}()
	l.Mat()
}
