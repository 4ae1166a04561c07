package nn

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/kernels/bf16"
)

// Precision is the arithmetic of the matrix products (Linear) and
// convolutions (Conv2d) of every model; attention, norms and element-wise
// operations always run in float32.
type Precision int32

const (
	// FP32 runs everything in float32 (the default).
	FP32 Precision = iota
	// BF16 runs Linear and Conv2d with bfloat16 operands and float32
	// accumulation (package kernels/bf16): each layer converts its weights
	// once, at its first bf16 Forward, into a cached packed bf16 copy (the
	// float32 weights are kept), and rounds its input to bf16 while packing.
	// On a CPU without AVX512_BF16 the same numbers come from the float32
	// kernels, at float32 speed.
	BF16
)

var precision atomic.Int32

func (p Precision) String() string {
	switch p {
	case FP32:
		return "fp32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("Precision(%d)", int32(p))
}

// ParsePrecision reads "fp32" or "bf16" (case-insensitive).
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(s) {
	case "fp32", "float32", "f32":
		return FP32, nil
	case "bf16", "bfloat16":
		return BF16, nil
	}
	return FP32, fmt.Errorf("nn: unknown precision %q (want fp32 or bf16)", s)
}

// SetPrecision selects the precision of every Linear and Conv2d Forward from
// now on and returns the previous one. Switch it only while no Forward runs.
func SetPrecision(p Precision) Precision { return Precision(precision.Swap(int32(p))) }

// CurrentPrecision returns the precision in use.
func CurrentPrecision() Precision { return Precision(precision.Load()) }

// BF16Native reports whether BF16 runs on the CPU's bf16 dot products
// (AVX512_BF16) rather than on the float32 fallback.
func BF16Native() bool { return bf16.Available() }

// source identifies the storage a packed copy was made from.
func source(m kernels.Mat) unsafe.Pointer {
	switch {
	case len(m.F16) > 0:
		return unsafe.Pointer(&m.F16[0])
	case len(m.F32) > 0:
		return unsafe.Pointer(&m.F32[0])
	}
	return nil
}

// packMu guards the lazily packed bf16 weights of every layer.
var packMu sync.Mutex

// bf16Right returns the cached bf16 form of the weight (packing it at the
// first call, or again after the weight tensor was re-bound). With StoreBF16
// the packed form then becomes the only copy.
func (l *Linear) bf16Right() *bf16.RightMatrix {
	packMu.Lock()
	defer packMu.Unlock()
	if l.bf != nil && l.sourceGone() {
		return l.bf
	}
	m := l.Mat()
	if l.bf == nil || l.bfSrc != source(m) {
		l.bf, l.bfSrc = bf16.PackRightT(l.Out, l.In, m.Float32(), l.In), source(m)
	}
	if l.packOnly && bf16.Available() {
		l.w16, l.bfSrc = nil, nil
		l.Weight.DropData()
	}
	return l.bf
}

// useBF16 reports whether Forward runs the bf16 kernels: in BF16 precision,
// or when only the packed bf16 weights are left.
func (l *Linear) useBF16() bool {
	if CurrentPrecision() == BF16 {
		return true
	}
	packMu.Lock()
	defer packMu.Unlock()
	return l.bf != nil && l.sourceGone()
}

func (l *Linear) sourceGone() bool { return l.w16 == nil && !l.Weight.HasData() }

// DropPacked forgets the cached bf16 weights (call it after changing the
// float32 weights in place, e.g. merging a LoRA, once a bf16 Forward ran).
// It keeps them when they are the only copy (StoreBF16).
func (l *Linear) DropPacked() {
	packMu.Lock()
	if !l.sourceGone() {
		l.bf, l.bfSrc = nil, nil
	}
	packMu.Unlock()
}

// PackedBytes returns the memory held by the cached bf16 weights.
func (l *Linear) PackedBytes() int {
	packMu.Lock()
	defer packMu.Unlock()
	if l.bf == nil {
		return 0
	}
	return l.bf.Bytes()
}

func (c *Conv2d) bf16Left() *bf16.LeftMatrix {
	packMu.Lock()
	defer packMu.Unlock()
	if c.bf != nil && c.sourceGone() {
		return c.bf
	}
	m := c.Mat()
	if c.bf == nil || c.bfSrc != source(m) {
		c.bf, c.bfSrc = bf16.PackConv(c.P, m.Float32()), source(m)
	}
	if c.packOnly && bf16.Available() {
		c.w16, c.bfSrc = nil, nil
		c.Weight.DropData()
	}
	return c.bf
}

// useBF16 reports whether the convolution runs the bf16 kernels (see
// Linear.useBF16).
func (c *Conv2d) useBF16() bool {
	if CurrentPrecision() == BF16 {
		return true
	}
	packMu.Lock()
	defer packMu.Unlock()
	return (c.bf != nil || c.bfUp != nil) && c.sourceGone()
}

func (c *Conv2d) sourceGone() bool { return c.w16 == nil && !c.Weight.HasData() }

// DropPacked forgets the cached bf16 weights (see Linear.DropPacked).
func (c *Conv2d) DropPacked() {
	packMu.Lock()
	if !c.sourceGone() {
		c.bf, c.bfSrc = nil, nil
		c.bfUp, c.bfUpSrc = nil, nil
	}
	packMu.Unlock()
}

// PackedBytes returns the memory held by the cached bf16 weights.
func (c *Conv2d) PackedBytes() int {
	packMu.Lock()
	defer packMu.Unlock()
	n := 0
	if c.bf != nil {
		n += c.bf.Bytes()
	}
	if c.bfUp != nil {
		for _, l := range c.bfUp {
			n += l.Bytes()
		}
	}
	return n
}
