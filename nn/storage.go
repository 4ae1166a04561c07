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
)

func (s Storage) String() string {
	switch s {
	case StoreF32:
		return "fp32"
	case StoreF16:
		return "fp16"
	}
	return fmt.Sprintf("Storage(%d)", int(s))
}

// ParseStorage reads "fp32" or "fp16" (case-insensitive).
func ParseStorage(s string) (Storage, error) {
	switch strings.ToLower(s) {
	case "fp32", "float32", "f32":
		return StoreF32, nil
	case "fp16", "float16", "f16", "half":
		return StoreF16, nil
	}
	return StoreF32, fmt.Errorf("nn: unknown weight storage %q (want fp32 or fp16)", s)
}

// Mat returns the weight [Out, In] as a kernel operand in its storage.
func (l *Linear) Mat() kernels.Mat {
	if l.w16 != nil {
		return kernels.Mat{F16: l.w16}
	}
	return kernels.F32(l.Weight.Data())
}

// Mat returns the weight [OutC, InC·KH·KW] as a kernel operand in its
// storage.
func (c *Conv2d) Mat() kernels.Mat {
	if c.w16 != nil {
		return kernels.Mat{F16: c.w16}
	}
	return kernels.F32(c.Weight.Data())
}

// Storage returns how the layer holds its weight.
func (l *Linear) Storage() Storage { return storageOf(l.w16) }

// Storage returns how the layer holds its weight.
func (c *Conv2d) Storage() Storage { return storageOf(c.w16) }

func storageOf(w16 []uint16) Storage {
	if w16 != nil {
		return StoreF16
	}
	return StoreF32
}

// SetStorage converts the weight to s. Converting to StoreF16 drops the
// float32 data (Weight keeps its shape, without storage); converting back
// widens the float16 values. Packed bf16 copies are dropped. Call it only
// while no Forward runs, after any change to the weights (LoRA merges).
func (l *Linear) SetStorage(s Storage) { setStorage(l.Weight, &l.w16, s); l.DropPacked() }

// SetStorage converts the weight to s (see Linear.SetStorage).
func (c *Conv2d) SetStorage(s Storage) { setStorage(c.Weight, &c.w16, s); c.DropPacked() }

func setStorage(w *tensor.Tensor, w16 *[]uint16, s Storage) {
	switch {
	case s == StoreF16 && *w16 == nil && w.HasData():
		*w16 = kernels.NarrowF16(w.Contiguous().Data())
		w.DropData()
	case s == StoreF32 && *w16 != nil:
		w.SetData(kernels.Mat{F16: *w16}.Float32())
		*w16 = nil
	}
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
// Biases, norms and embeddings stay float32.
func SetModelStorage(model any, s Storage) StorageReport {
	var r StorageReport
	seen := map[uintptr]bool{}
	size := func(st Storage) int64 {
		if st == StoreF16 {
			return 2
		}
		return 4
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
				switch l := v.Interface().(type) {
				case *Linear:
					n := int64(l.Weight.Numel())
					r.Layers++
					r.Params += n
					r.BytesBefore += n * size(l.Storage())
					l.SetStorage(s)
					r.BytesAfter += n * size(l.Storage())
					return
				case *Conv2d:
					n := int64(l.Weight.Numel())
					r.Layers++
					r.Params += n
					r.BytesBefore += n * size(l.Storage())
					l.SetStorage(s)
					r.BytesAfter += n * size(l.Storage())
					return
				case *tensor.Tensor:
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
	return r
}
