package tensor

import (
	"fmt"
	"strings"
)

// Tensor is a strided view over float32 storage. The zero value is not useful;
// build one with New, FromData or Shaped.
type Tensor struct {
	shape   []int
	strides []int
	offset  int
	data    []float32
}

// New allocates a zero-filled contiguous tensor.
func New(shape ...int) *Tensor {
	n := numel(shape)
	return &Tensor{shape: cloneInts(shape), strides: contiguousStrides(shape), data: Alloc(n)}
}

// FromData wraps data (not copied) as a contiguous tensor of the given shape.
// It panics when len(data) != product(shape).
func FromData(data []float32, shape ...int) *Tensor {
	if len(data) != numel(shape) {
		panic(fmt.Sprintf("tensor.FromData: %d values for shape %v", len(data), shape))
	}
	return &Tensor{shape: cloneInts(shape), strides: contiguousStrides(shape), data: data}
}

// Shaped returns a tensor with a shape but no storage yet: a placeholder that
// checkpoint binding fills (SetData) after checking the shape.
func Shaped(shape ...int) *Tensor {
	return &Tensor{shape: cloneInts(shape), strides: contiguousStrides(shape)}
}

// HasData reports whether storage is attached.
func (t *Tensor) HasData() bool { return t != nil && t.data != nil }

// SetData attaches contiguous storage of exactly Numel values.
func (t *Tensor) SetData(d []float32) {
	if len(d) != t.Numel() {
		panic(fmt.Sprintf("tensor.SetData: %d values for shape %v", len(d), t.shape))
	}
	t.data = d
	t.offset = 0
	t.strides = contiguousStrides(t.shape)
}

// DropData detaches the storage (the tensor becomes a placeholder again, as
// from Shaped), so that it can be collected once no other view holds it.
func (t *Tensor) DropData() {
	t.data = nil
	t.offset = 0
	t.strides = contiguousStrides(t.shape)
}

// Shape returns the dimensions (do not modify).
func (t *Tensor) Shape() []int { return t.shape }

// Strides returns the strides in elements (do not modify).
func (t *Tensor) Strides() []int { return t.strides }

// Offset is the index of element 0 in the storage.
func (t *Tensor) Offset() int { return t.offset }

// Storage returns the whole underlying storage.
func (t *Tensor) Storage() []float32 { return t.data }

// Dim returns dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// Numel is the number of elements.
func (t *Tensor) Numel() int { return numel(t.shape) }

// IsContiguous reports whether the view is dense row-major.
func (t *Tensor) IsContiguous() bool {
	s := 1
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.strides[i] != s {
			return false
		}
		s *= t.shape[i]
	}
	return true
}

// Data returns the elements of a contiguous tensor as a slice sharing storage.
// It panics on a non-contiguous view: call Contiguous first.
func (t *Tensor) Data() []float32 {
	if !t.IsContiguous() {
		panic("tensor.Data: not contiguous")
	}
	return t.data[t.offset : t.offset+t.Numel()]
}

// Contiguous returns t itself when dense, else a dense copy.
func (t *Tensor) Contiguous() *Tensor {
	if t.IsContiguous() {
		return t
	}
	out := Empty(t.shape...)
	t.copyTo(out.data)
	return out
}

// Clone returns a dense copy.
func (t *Tensor) Clone() *Tensor {
	out := Empty(t.shape...)
	t.copyTo(out.data)
	return out
}

// CopyFrom copies src (any strides, same shape) into t (any strides).
func (t *Tensor) CopyFrom(src *Tensor) {
	if !SameShape(t.shape, src.shape) {
		panic(fmt.Sprintf("tensor.CopyFrom: shape %v vs %v", t.shape, src.shape))
	}
	if t.IsContiguous() {
		src.copyTo(t.Data())
		return
	}
	// t strided: no dense copy of src (a temporary would be garbage
	// inside a memory plan's region).
	copyStrided(t.shape, t.data, t.offset, t.strides, src.data, src.offset, src.strides)
}

func (t *Tensor) copyTo(dst []float32) {
	if t.IsContiguous() {
		copy(dst, t.data[t.offset:t.offset+t.Numel()])
		return
	}
	copyStrided(t.shape, dst, 0, contiguousStrides(t.shape), t.data, t.offset, t.strides)
}

// copyStrided copies the elements of shape from src (offset so, strides ss)
// to dst (offset do, strides ds), walking the rows of the two in step.
func copyStrided(shape []int, dst []float32, do int, ds []int, src []float32, so int, ss []int) {
	if numel(shape) == 0 {
		return
	}
	r := len(shape)
	if r == 0 {
		dst[do] = src[so]
		return
	}
	last := r - 1
	inner, di, si := shape[last], ds[last], ss[last]
	idx := make([]int, r)
	for {
		if di == 1 && si == 1 {
			copy(dst[do:do+inner], src[so:so+inner])
		} else {
			for j := range inner {
				dst[do+j*di] = src[so+j*si]
			}
		}
		d := last - 1
		for ; d >= 0; d-- {
			idx[d]++
			do += ds[d]
			so += ss[d]
			if idx[d] < shape[d] {
				break
			}
			do -= ds[d] * shape[d]
			so -= ss[d] * shape[d]
			idx[d] = 0
		}
		if d < 0 {
			return
		}
	}
}

// At returns one element.
func (t *Tensor) At(idx ...int) float32 { return t.data[t.index(idx)] }

// Set sets one element.
func (t *Tensor) Set(v float32, idx ...int) { t.data[t.index(idx)] = v }

func (t *Tensor) index(idx []int) int {
	if len(idx) != len(t.shape) {
		panic(fmt.Sprintf("tensor: %d indices for rank %d", len(idx), len(t.shape)))
	}
	off := t.offset
	for i, v := range idx {
		if v < 0 || v >= t.shape[i] {
			panic(fmt.Sprintf("tensor: index %v out of range for shape %v", idx, t.shape))
		}
		off += v * t.strides[i]
	}
	return off
}

// Reshape returns a view with a new shape (one dimension may be -1). A
// non-contiguous tensor is copied first.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	shape = cloneInts(shape)
	n, neg := 1, -1
	for i, s := range shape {
		if s == -1 {
			if neg >= 0 {
				panic("tensor.Reshape: two -1 dimensions")
			}
			neg = i
			continue
		}
		n *= s
	}
	if neg >= 0 {
		if n == 0 {
			panic("tensor.Reshape: -1 with zero-size dimensions")
		}
		shape[neg] = t.Numel() / n
	}
	if numel(shape) != t.Numel() {
		panic(fmt.Sprintf("tensor.Reshape: %v to %v", t.shape, shape))
	}
	c := t.Contiguous()
	return &Tensor{shape: shape, strides: contiguousStrides(shape), offset: c.offset, data: c.data}
}

// Permute reorders dimensions (a view, no copy).
func (t *Tensor) Permute(perm ...int) *Tensor {
	if len(perm) != len(t.shape) {
		panic("tensor.Permute: wrong rank")
	}
	seen := make([]bool, len(perm))
	sh := make([]int, len(perm))
	st := make([]int, len(perm))
	for i, p := range perm {
		if p < 0 || p >= len(perm) || seen[p] {
			panic(fmt.Sprintf("tensor.Permute: bad permutation %v", perm))
		}
		seen[p] = true
		sh[i], st[i] = t.shape[p], t.strides[p]
	}
	return &Tensor{shape: sh, strides: st, offset: t.offset, data: t.data}
}

// Narrow returns the view of length elements from start along dim.
func (t *Tensor) Narrow(dim, start, length int) *Tensor {
	if dim < 0 {
		dim += len(t.shape)
	}
	if start < 0 || length < 0 || start+length > t.shape[dim] {
		panic(fmt.Sprintf("tensor.Narrow: [%d,%d) of dim %d size %d", start, start+length, dim, t.shape[dim]))
	}
	sh := cloneInts(t.shape)
	sh[dim] = length
	return &Tensor{shape: sh, strides: cloneInts(t.strides), offset: t.offset + start*t.strides[dim], data: t.data}
}

// Slice is Narrow(dim, lo, hi-lo).
func (t *Tensor) Slice(dim, lo, hi int) *Tensor { return t.Narrow(dim, lo, hi-lo) }

// Select drops dimension dim at index i (a view).
func (t *Tensor) Select(dim, i int) *Tensor {
	if dim < 0 {
		dim += len(t.shape)
	}
	v := t.Narrow(dim, i, 1)
	v.shape = append(v.shape[:dim:dim], v.shape[dim+1:]...)
	v.strides = append(v.strides[:dim:dim], v.strides[dim+1:]...)
	return v
}

// String gives the shape, for error messages.
func (t *Tensor) String() string {
	return fmt.Sprintf("Tensor%v", t.shape)
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ShapeString formats a shape as [a, b, c].
func ShapeString(s []int) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func numel(shape []int) int {
	n := 1
	for _, s := range shape {
		if s < 0 {
			panic(fmt.Sprintf("tensor: negative dimension in %v", shape))
		}
		n *= s
	}
	return n
}

func contiguousStrides(shape []int) []int {
	st := make([]int, len(shape))
	s := 1
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = s
		s *= shape[i]
	}
	return st
}

func cloneInts(a []int) []int { return append([]int(nil), a...) }
