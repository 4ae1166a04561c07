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

	// References: the same layers with float16-rounded float32 weights.
	ref := []*Linear{{Weight: roundF16(m.Lins[0].Weight), Bias: m.Lins[0].Bias, In: 77, Out: 45}, {Weight: roundF16(m.Lins[1].Weight), In: 64, Out: 96}}
	refConv := &Conv2d{Weight: roundF16(m.Conv.Weight), Bias: m.Conv.Bias, P: m.Conv.P}
	refDown := &Conv2d{Weight: roundF16(m.Inner.Conv.Weight), Bias: m.Inner.Conv.Bias, P: m.Inner.Conv.P}
	x0, x1 := randTensor(r, 2, 19, 77), randTensor(r, 130, 64)
	xc, xd := randTensor(r, 2, 5, 9, 40), randTensor(r, 1, 8, 17, 32)

	rep := SetModelStorage(m, StoreF16)
	if rep.Layers != 4 || rep.Params != 45*77+96*64+12*5*9+16*8*9 || rep.BytesAfter*2 != rep.BytesBefore {
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
		}
		for _, pr := range pairs {
			for i, w := range pr.want.Data() {
				if g := pr.got.Data()[i]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%v %s: y[%d] = %g, want %g", p, pr.name, i, g, w)
				}
			}
		}
	}
	SetModelStorage(m, StoreF32)
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
