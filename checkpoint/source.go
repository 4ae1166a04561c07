package checkpoint

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/osediff-go/osediff/tensor"
)

// DType names an element type as safetensors spells it.
type DType string

// The element types a Source may hold.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size is the byte size of one element (0 for an unknown dtype).
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// ErrNotFound is wrapped by reads of a name a Source does not hold.
var ErrNotFound = errors.New("tensor not found")

// Info describes one stored tensor.
type Info struct {
	Name  string
	DType DType
	Shape []int
}

// Numel is the number of elements.
func (i Info) Numel() int {
	n := 1
	for _, d := range i.Shape {
		n *= d
	}
	return n
}

// Source is a set of named tensors.
type Source interface {
	// Keys lists the tensor names, sorted.
	Keys() []string
	// Info describes one tensor.
	Info(name string) (Info, bool)
	// ReadFloat32 converts the tensor into dst (len(dst) must equal its
	// number of elements). Floating-point dtypes convert exactly; integer
	// dtypes convert to the nearest float32.
	ReadFloat32(name string, dst []float32) error
}

// Int64Reader is implemented by sources that can read integer tensors
// (token ids) exactly.
type Int64Reader interface {
	ReadInt64(name string, dst []int64) error
}

// ReadTensor allocates a float32 tensor of the stored shape and reads name
// into it.
func ReadTensor(src Source, name string) (*tensor.Tensor, error) {
	info, ok := src.Info(name)
	if !ok {
		return nil, fmt.Errorf("checkpoint: %q: %w", name, ErrNotFound)
	}
	t := tensor.New(info.Shape...)
	if err := src.ReadFloat32(name, t.Data()); err != nil {
		return nil, err
	}
	return t, nil
}

// ReadInt64 reads an integer (or integral float) tensor as int64 values,
// exactly when src implements Int64Reader.
func ReadInt64(src Source, name string) ([]int64, []int, error) {
	info, ok := src.Info(name)
	if !ok {
		return nil, nil, fmt.Errorf("checkpoint: %q: %w", name, ErrNotFound)
	}
	dst := make([]int64, info.Numel())
	if r, ok := src.(Int64Reader); ok {
		if err := r.ReadInt64(name, dst); err != nil {
			return nil, nil, err
		}
		return dst, info.Shape, nil
	}
	f := make([]float32, len(dst))
	if err := src.ReadFloat32(name, f); err != nil {
		return nil, nil, err
	}
	for i, v := range f {
		if v != float32(math.Trunc(float64(v))) {
			return nil, nil, fmt.Errorf("checkpoint: %q: value %v at %d is not an integer", name, v, i)
		}
		dst[i] = int64(v)
	}
	return dst, info.Shape, nil
}

// MapSource wraps in-memory tensors (any strides) as a Source of F32 tensors.
func MapSource(m map[string]*tensor.Tensor) Source {
	keys := make([]string, 0, len(m))
	for k, t := range m {
		if t != nil && t.HasData() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return &mapSource{m: m, keys: keys}
}

type mapSource struct {
	m    map[string]*tensor.Tensor
	keys []string
}

func (s *mapSource) Keys() []string { return append([]string(nil), s.keys...) }

func (s *mapSource) Info(name string) (Info, bool) {
	t, ok := s.m[name]
	if !ok || t == nil || !t.HasData() {
		return Info{}, false
	}
	return Info{Name: name, DType: F32, Shape: append([]int(nil), t.Shape()...)}, true
}

func (s *mapSource) ReadFloat32(name string, dst []float32) error {
	t, ok := s.m[name]
	if !ok || t == nil || !t.HasData() {
		return fmt.Errorf("checkpoint: %q: %w", name, ErrNotFound)
	}
	if len(dst) != t.Numel() {
		return fmt.Errorf("checkpoint: %q: destination has %d values, tensor %d", name, len(dst), t.Numel())
	}
	tensor.FromData(dst, t.Shape()...).CopyFrom(t)
	return nil
}

// checkedNumel multiplies dims, refusing negative dims and products whose
// byte size (elem bytes each) would overflow or exceed limit.
func checkedNumel(shape []int64, elem int, limit int64) (int64, error) {
	n, nz := int64(1), int64(1) // nz: product of the non-zero dims
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in %v", shape)
		}
		n *= min(d, 1) // 0 once any dim is 0
		if d == 0 {
			continue
		}
		if nz > limit/d {
			return 0, fmt.Errorf("shape %v too large", shape)
		}
		nz *= d
	}
	if elem > 0 && nz > limit/int64(elem) && nz > 1 {
		return 0, fmt.Errorf("shape %v too large", shape)
	}
	return n * nz, nil
}
