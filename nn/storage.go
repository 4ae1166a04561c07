package nn

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// Storage is how Linear and Conv2d layers hold their weight matrices.
type Storage int

const (
	// StoreF32 keeps the float32 weights as bound (the default; exact).
	StoreF32 Storage = iota
	// StoreF16 keeps the weights as IEEE float16 (half the memory). The
	// float32 kernels widen them panel by panel as they pack them, so the
	// arithmetic stays float32; only the weights are rounded (relative error
	// at most 2⁻¹¹, values below 6.1e-5 in magnitude lose precision, above
	// 65504 become infinite). The official SD 2.1 checkpoints ship such fp16
	// files.
	StoreF16
	// StoreBF16 holds the weights as float16 until a layer first runs in
	// BF16 precision, then only in the bf16 kernels' packed form (on a CPU
	// with AVX512_BF16; elsewhere it is StoreF16): half the memory of
	// float32, without a second copy. A layer whose float16 weights are gone
	// runs the bf16 kernels whatever the precision, and cannot be converted
	// back. Layers used only through Mat (outside Forward) keep float16.
	StoreBF16
)

func (s Storage) String() string {
	switch s {
	case StoreF32:
		return "fp32"
	case StoreF16:
		return "fp16"
	case StoreBF16:
		return "bf16"
	}
	return fmt.Sprintf("Storage(%d)", int(s))
}

// ParseStorage reads "fp32", "fp16" or "bf16" (case-insensitive).
func ParseStorage(s string) (Storage, error) {
	switch strings.ToLower(s) {
	case "fp32", "float32", "f32":
		return StoreF32, nil
	case "fp16", "float16", "f16", "half":
		return StoreF16, nil
	case "bf16", "bfloat16":
		return StoreBF16, nil
	}
	return StoreF32, fmt.Errorf("nn: unknown weight storage %q (want fp32, fp16 or bf16)", s)
}

// Mat returns the weight [Out, In] as a kernel operand in its storage. It
// panics when only packed bf16 weights are left (StoreBF16).
func (l *Linear) Mat() kernels.Mat { return mat(l.Weight, l.w16, "Linear") }

// Mat returns the weight [OutC, InC·KH·KW] as a kernel operand in its
// storage (see Linear.Mat).
func (c *Conv2d) Mat() kernels.Mat { return mat(c.Weight, c.w16, "Conv2d") }

func mat(w *tensor.Tensor, w16 []uint16, what string) kernels.Mat {
	if w16 != nil {
		return kernels.Mat{F16: w16}
	}
	if !w.HasData() && w.Numel() > 0 {
		panic("nn." + what + ": the weights are held only in packed bf16 form (StoreBF16); run the layer through Forward")
	}
	return kernels.F32(w.Data())
}

// Storage returns how the table is held (StoreF32 or StoreF16).
func (e *Embedding) Storage() Storage { return storageOf(e.w16, false) }

// SetStorage converts the table: StoreF16 and StoreBF16 hold it in float16
// (a look-up widens the rows it reads), StoreF32 as float32.
func (e *Embedding) SetStorage(s Storage) error {
	setStorage(e.Weight, &e.w16, s)
	return nil
}

// Storage returns how the layer holds its weight.
func (l *Linear) Storage() Storage { return storageOf(l.w16, l.packOnly) }

// Storage returns how the layer holds its weight.
func (c *Conv2d) Storage() Storage { return storageOf(c.w16, c.packOnly) }

func storageOf(w16 []uint16, packOnly bool) Storage {
	switch {
	case packOnly:
		return StoreBF16
	case w16 != nil:
		return StoreF16
	}
	return StoreF32
}

// SetStorage converts the weight to s. Converting to StoreF16 (or
// StoreBF16) drops the float32 data (Weight keeps its shape, without
// storage); converting back widens the float16 values. Packed bf16 copies
// are dropped. Call it only while no Forward runs, after any change to the
// weights (LoRA merges). A layer whose only weights are packed bf16 ones
// cannot be converted (an error).
func (l *Linear) SetStorage(s Storage) error {
	packMu.Lock()
	gone := l.bf != nil && l.sourceGone()
	packMu.Unlock()
	if err := setLayerStorage(l.Weight, &l.w16, &l.packOnly, gone, s, fmt.Sprintf("nn.Linear %d→%d", l.In, l.Out)); err != nil {
		return err
	}
	l.DropPacked()
	return nil
}

// SetStorage converts the weight to s (see Linear.SetStorage).
func (c *Conv2d) SetStorage(s Storage) error {
	packMu.Lock()
	gone := (c.bf != nil || c.bfUp != nil) && c.sourceGone()
	packMu.Unlock()
	if err := setLayerStorage(c.Weight, &c.w16, &c.packOnly, gone, s, fmt.Sprintf("nn.Conv2d %d→%d", c.P.InC, c.P.OutC)); err != nil {
		return err
	}
	c.DropPacked()
	return nil
}

// setLayerStorage is SetStorage of a Linear or Conv2d without its packed
// copy: gone says only that copy is left (then only StoreBF16 is possible).
func setLayerStorage(w *tensor.Tensor, w16 *[]uint16, packOnly *bool, gone bool, s Storage, what string) error {
	if gone {
		if s == StoreBF16 {
			return nil
		}
		return fmt.Errorf("%s: weights held only in packed bf16 form", what)
	}
	setStorage(w, w16, s)
	*packOnly = s == StoreBF16
	return nil
}

func setStorage(w *tensor.Tensor, w16 *[]uint16, s Storage) {
	switch {
	case s != StoreF32 && *w16 == nil && w.HasData():
		*w16 = kernels.NarrowF16(w.Contiguous().Data())
		w.DropData()
	case s == StoreF32 && *w16 != nil:
		w.SetData(kernels.Mat{F16: *w16}.Float32())
		*w16 = nil
	}
}

// storageLayer is a layer whose weights SetModelStorage converts.
type storageLayer interface {
	Storage() Storage
	SetStorage(Storage) error
}

// StorageReport counts the weights SetModelStorage converted.
type StorageReport struct {
	Layers      int   // Linear and Conv2d layers converted
	Params      int64 // their weight values
	BytesBefore int64
	BytesAfter  int64
}

// SetModelStorage converts the weight of every Linear and Conv2d reachable
// from model (a pointer to a struct of layers, slices and maps of them) to s.
// Embedding tables follow (in float16 for StoreBF16); biases and norms stay
// float32. The first error (a layer held only in packed bf16 form) is
// returned after every other layer was converted.
func SetModelStorage(model any, s Storage) (StorageReport, error) {
	var r StorageReport
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	seen := map[uintptr]bool{}
	size := func(st Storage) int64 {
		if st == StoreF32 {
			return 4
		}
		return 2
	}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if v.IsNil() {
				return
			}
			if v.Kind() == reflect.Pointer {
				if seen[v.Pointer()] {
					return
				}
				seen[v.Pointer()] = true
				var l storageLayer
				var n int // its weight values
				switch t := v.Interface().(type) {
				case *Linear:
					l, n = t, t.Weight.Numel()
				case *Conv2d:
					l, n = t, t.Weight.Numel()
				case *Embedding:
					l, n = t, t.Weight.Numel()
				case *tensor.Tensor:
					return
				}
				if l != nil {
					r.Layers++
					r.Params += int64(n)
					r.BytesBefore += int64(n) * size(l.Storage())
					note(l.SetStorage(s))
					r.BytesAfter += int64(n) * size(l.Storage())
					return
				}
			}
			walk(v.Elem())
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k))
			}
		}
	}
	walk(reflect.ValueOf(model))
	return r, firstErr
}
