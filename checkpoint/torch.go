package checkpoint

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strings"
	"sync"
)

// maxDataPkl bounds the size of a torch checkpoint's data.pkl.
const maxDataPkl = 1 << 30

// ErrLegacyTorch is returned for torch.save files in the pre-1.6 (non-zip)
// format.
var ErrLegacyTorch = errors.New("legacy (non-zip) torch.save format is not supported: re-save the file with torch >= 1.6")

// TorchFile is a torch.save zip checkpoint (.pkl, .pth, .bin): its pickled
// object tree, with tensors left lazy in the memory-mapped archive.
type TorchFile struct {
	path     string
	mu       sync.RWMutex
	m        *mapping // nil once closed
	prefix   string   // "<archive>/"
	root     any
	storages map[string]*torchStorage
}

type torchStorage struct {
	file  *TorchFile
	key   string
	dtype DType
	numel int64
	entry *zip.File
	off   int64 // byte offset of the stored (uncompressed) entry in the file, -1 if compressed
}

// TorchTensor is a lazy tensor of a torch checkpoint: a strided view of a
// storage. Read it through a Source (TorchFile.Source).
type TorchTensor struct {
	DType   DType
	Shape   []int
	Stride  []int // in elements
	Offset  int   // storage offset in elements
	storage *torchStorage
}

// StorageKey names the archive entry data/<key> holding the tensor's storage.
func (t *TorchTensor) StorageKey() string { return t.storage.key }

// Numel is the number of elements.
func (t *TorchTensor) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// contiguous reports whether the view is dense row-major.
func (t *TorchTensor) contiguous() bool {
	s := 1
	for i := len(t.Shape) - 1; i >= 0; i-- {
		if t.Shape[i] != 1 && t.Stride[i] != s {
			return false
		}
		s *= t.Shape[i]
	}
	return true
}

// OpenTorch opens a torch.save zip archive and unpickles its data.pkl with
// the restricted unpickler. Storages stay in the mapped file until read.
func OpenTorch(path string) (*TorchFile, error) {
	m, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	f, err := parseTorch(m.data)
	if err != nil {
		m.close()
		return nil, fmt.Errorf("checkpoint: %s: %w", path, err)
	}
	f.path, f.m = path, m
	return f, nil
}

func parseTorch(file []byte) (*TorchFile, error) {
	if !bytes.HasPrefix(file, []byte("PK\x03\x04")) {
		if len(file) > 0 && (file[0] == 0x80 || bytes.HasPrefix(file, []byte("\x1f\x8b"))) || isTar(file) {
			return nil, ErrLegacyTorch
		}
		return nil, fmt.Errorf("%w: not a torch.save zip archive", ErrMalformed)
	}
	zr, err := zip.NewReader(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		return nil, fmt.Errorf("%w: zip: %v", ErrMalformed, err)
	}
	f := &TorchFile{storages: map[string]*torchStorage{}}
	entries := map[string]*zip.File{}
	var pkl *zip.File
	for _, e := range zr.File {
		entries[e.Name] = e
		if e.Name == "data.pkl" || strings.HasSuffix(e.Name, "/data.pkl") {
			if pkl == nil || len(e.Name) < len(pkl.Name) {
				pkl = e
			}
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("%w: no data.pkl in the archive", ErrMalformed)
	}
	f.prefix = strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := entries[f.prefix+"byteorder"]; ok {
		b, err := readEntry(bo, 16)
		if err != nil {
			return nil, err
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return nil, fmt.Errorf("%w: byteorder %q (only little-endian checkpoints are supported)", ErrMalformed, s)
		}
	}
	data, err := readEntry(pkl, maxDataPkl)
	if err != nil {
		return nil, err
	}
	persist := func(pid any) (any, error) {
		t, ok := pid.(pyTuple)
		if !ok || len(t) != 5 {
			return nil, fmt.Errorf("%w: persistent id %s", ErrMalformed, pyTypeName(pid))
		}
		if s, _ := t[0].(string); s != "storage" {
			return nil, fmt.Errorf("%w: persistent id of kind %v", ErrForbidden, t[0])
		}
		st, ok1 := t[1].(storageType)
		key, ok2 := t[2].(string)
		numel, ok3 := t[4].(int64)
		if !ok1 || !ok2 || !ok3 || numel < 0 {
			return nil, fmt.Errorf("%w: storage id (%s, %s, %s)", ErrMalformed, pyTypeName(t[1]), pyTypeName(t[2]), pyTypeName(t[4]))
		}
		if s, ok := f.storages[key]; ok {
			if s.dtype != st.dtype || s.numel != numel {
				return nil, fmt.Errorf("%w: storage %q used as %s[%d] and %s[%d]", ErrMalformed, key, s.dtype, s.numel, st.dtype, numel)
			}
			return s, nil
		}
		e, ok := entries[f.prefix+"data/"+key]
		if !ok {
			return nil, fmt.Errorf("%w: storage %q has no archive entry", ErrMalformed, key)
		}
		if numel > int64(e.UncompressedSize64)/int64(st.dtype.Size()) {
			return nil, fmt.Errorf("%w: storage %q: %d %s elements in a %d-byte entry", ErrMalformed, key, numel, st.dtype, e.UncompressedSize64)
		}
		s := &torchStorage{file: f, key: key, dtype: st.dtype, numel: numel, entry: e, off: -1}
		if e.Method == zip.Store {
			off, err := e.DataOffset()
			if err != nil {
				return nil, fmt.Errorf("%w: storage %q: %v", ErrMalformed, key, err)
			}
			if off < 0 || int64(e.CompressedSize64) > int64(len(file))-off || int64(e.CompressedSize64) != int64(e.UncompressedSize64) {
				return nil, fmt.Errorf("%w: storage %q outside the file", ErrMalformed, key)
			}
			s.off = off
		}
		f.storages[key] = s
		return s, nil
	}
	v, err := unpickle(data, persist, rebuildTensor)
	if err != nil {
		return nil, err
	}
	if f.root, err = toPlain(v); err != nil {
		return nil, err
	}
	return f, nil
}

func isTar(b []byte) bool { return len(b) >= 262 && string(b[257:262]) == "ustar" }

// readEntry reads a zip entry of at most limit bytes, growing the buffer as
// bytes arrive (a lying header cannot force a huge allocation).
func readEntry(e *zip.File, limit int64) ([]byte, error) {
	if e.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%w: %s: %d bytes exceeds the %d limit", ErrMalformed, e.Name, e.UncompressedSize64, limit)
	}
	rc, err := e.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, e.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, e.Name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s exceeds the %d-byte limit", ErrMalformed, e.Name, limit)
	}
	return b, nil
}

// rebuildTensor applies torch's tensor-rebuilding functions.
func rebuildTensor(g pyGlobal, args pyTuple) (any, error) {
	switch g.name {
	case "_rebuild_parameter", "_rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, fmt.Errorf("%w: %s without arguments", ErrMalformed, g.name)
		}
		t, ok := args[0].(*TorchTensor)
		if !ok {
			return nil, fmt.Errorf("%w: %s of %s", ErrMalformed, g.name, pyTypeName(args[0]))
		}
		return t, nil
	case "_rebuild_tensor_v2", "_rebuild_tensor":
		if len(args) < 4 {
			return nil, fmt.Errorf("%w: %s with %d arguments", ErrMalformed, g.name, len(args))
		}
		s, ok := args[0].(*torchStorage)
		if !ok {
			return nil, fmt.Errorf("%w: %s of %s", ErrMalformed, g.name, pyTypeName(args[0]))
		}
		off, ok := args[1].(int64)
		if !ok || off < 0 {
			return nil, fmt.Errorf("%w: storage offset %v", ErrMalformed, args[1])
		}
		shape, err := intTuple(args[2])
		if err != nil {
			return nil, fmt.Errorf("%w: size: %v", ErrMalformed, err)
		}
		stride, err := intTuple(args[3])
		if err != nil {
			return nil, fmt.Errorf("%w: stride: %v", ErrMalformed, err)
		}
		if len(shape) != len(stride) || len(shape) > 32 {
			return nil, fmt.Errorf("%w: size %v with stride %v", ErrMalformed, shape, stride)
		}
		// The largest element index must lie inside the storage.
		var numel, last uint64 = 1, uint64(off)
		for i, d := range shape {
			if d < 0 || stride[i] < 0 {
				return nil, fmt.Errorf("%w: size %v stride %v", ErrMalformed, shape, stride)
			}
			hi, lo := bits.Mul64(uint64(d), numel)
			if hi != 0 || lo > 1<<50 {
				return nil, fmt.Errorf("%w: size %v too large", ErrMalformed, shape)
			}
			numel = lo
		}
		if numel > 0 {
			for i, d := range shape {
				hi, lo := bits.Mul64(uint64(d-1), uint64(stride[i]))
				if hi != 0 || lo > 1<<50 {
					return nil, fmt.Errorf("%w: stride %v too large", ErrMalformed, stride)
				}
				last += lo
			}
			if last >= uint64(s.numel) {
				return nil, fmt.Errorf("%w: tensor of size %v stride %v offset %d exceeds its storage of %d elements", ErrMalformed, shape, stride, off, s.numel)
			}
		}
		t := &TorchTensor{DType: s.dtype, Shape: make([]int, len(shape)), Stride: make([]int, len(shape)), Offset: int(off), storage: s}
		for i := range shape {
			t.Shape[i], t.Stride[i] = int(shape[i]), int(stride[i])
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w: call of %s.%s", ErrForbidden, g.module, g.name)
}

func intTuple(v any) ([]int64, error) {
	var items []any
	switch t := v.(type) {
	case pyTuple:
		items = t
	case *pyList:
		items = t.items
	default:
		return nil, fmt.Errorf("%s is not a tuple", pyTypeName(v))
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, ok := it.(int64)
		if !ok {
			return nil, fmt.Errorf("%s in an int tuple", pyTypeName(it))
		}
		out[i] = n
	}
	return out, nil
}

// Path is the file this was opened from.
func (f *TorchFile) Path() string { return f.path }

// Root is the unpickled object: map[string]any, []any (lists, tuples, sets),
// int64, float64, string, bool, []byte, nil or *TorchTensor.
func (f *TorchFile) Root() any { return f.root }

// Source returns the tensors of the dict found by following keys from the
// root (no keys: the root dict). Nested dicts are flattened with "." joins;
// values that are not tensors or dicts are skipped.
func (f *TorchFile) Source(path ...string) (Source, error) {
	v := f.root
	for i, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("checkpoint: %s: %q is not a dict", f.path, strings.Join(path[:i], "."))
		}
		if v, ok = m[k]; !ok {
			return nil, fmt.Errorf("checkpoint: %s: no key %q", f.path, strings.Join(path[:i+1], "."))
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("checkpoint: %s: %q is a %T, not a dict", f.path, strings.Join(path, "."), v)
	}
	ts := &TorchSource{file: f, tensors: map[string]*TorchTensor{}}
	if err := flatten(m, "", 0, ts.tensors); err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", f.path, err)
	}
	for k := range ts.tensors {
		ts.keys = append(ts.keys, k)
	}
	sort.Strings(ts.keys)
	return ts, nil
}

// maxFlatten bounds the dict entries Source visits (shared sub-dicts count
// each time they are reached).
const maxFlatten = 1 << 18

func flatten(m map[string]any, prefix string, depth int, out map[string]*TorchTensor) error {
	visited := 0
	return flattenInto(m, prefix, depth, out, &visited)
}

func flattenInto(m map[string]any, prefix string, depth int, out map[string]*TorchTensor, visited *int) error {
	if depth > 32 {
		return fmt.Errorf("%w: dicts nested deeper than 32", ErrMalformed)
	}
	for k, v := range m {
		if *visited++; *visited > maxFlatten {
			return fmt.Errorf("%w: more than %d dict entries", ErrMalformed, maxFlatten)
		}
		switch v := v.(type) {
		case *TorchTensor:
			out[prefix+k] = v
		case map[string]any:
			if err := flattenInto(v, prefix+k+".", depth+1, out, visited); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close unmaps the archive. Reads after Close fail.
func (f *TorchFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		return nil
	}
	err := f.m.close()
	f.m = nil
	return err
}

// TorchSource is the Source of a dict of a TorchFile.
type TorchSource struct {
	file    *TorchFile
	tensors map[string]*TorchTensor
	keys    []string
}

// Keys lists the tensor names, sorted.
func (s *TorchSource) Keys() []string { return append([]string(nil), s.keys...) }

// Tensor returns the lazy tensor of a key.
func (s *TorchSource) Tensor(name string) (*TorchTensor, bool) {
	t, ok := s.tensors[name]
	return t, ok
}

// Info describes one tensor.
func (s *TorchSource) Info(name string) (Info, bool) {
	t, ok := s.tensors[name]
	if !ok {
		return Info{}, false
	}
	return Info{Name: name, DType: t.DType, Shape: append([]int(nil), t.Shape...)}, true
}

// ReadFloat32 converts one tensor (any strides) into dst.
func (s *TorchSource) ReadFloat32(name string, dst []float32) error {
	t, err := s.lookup(name, len(dst))
	if err != nil {
		return err
	}
	return s.file.read(t, name, func(b []byte, idx []int) error {
		return decodeFloat32(t.DType, gather(b, idx, t.DType.Size()), dst)
	})
}

// ReadInt64 reads an integer tensor (any strides) exactly.
func (s *TorchSource) ReadInt64(name string, dst []int64) error {
	t, err := s.lookup(name, len(dst))
	if err != nil {
		return err
	}
	return s.file.read(t, name, func(b []byte, idx []int) error {
		return decodeInt64(t.DType, gather(b, idx, t.DType.Size()), dst)
	})
}

// gather packs the elements at idx (nil: all of b) of es bytes each.
func gather(b []byte, idx []int, es int) []byte {
	if idx == nil {
		return b
	}
	out := make([]byte, 0, len(idx)*es)
	for _, e := range idx {
		out = append(out, b[e*es:(e+1)*es]...)
	}
	return out
}

func (s *TorchSource) lookup(name string, n int) (*TorchTensor, error) {
	t, ok := s.tensors[name]
	if !ok {
		return nil, fmt.Errorf("checkpoint: %s: %q: %w", s.file.path, name, ErrNotFound)
	}
	if n != t.Numel() {
		return nil, fmt.Errorf("checkpoint: %s: %q: destination has %d values, tensor %v has %d", s.file.path, name, n, t.Shape, t.Numel())
	}
	return t, nil
}

// read hands fn the bytes of t: for a contiguous view the exact byte range
// (idx nil), otherwise the span of storage it touches and the element index
// of each value, in row-major order, relative to that span.
func (f *TorchFile) read(t *TorchTensor, name string, fn func(b []byte, idx []int) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.m == nil {
		return fmt.Errorf("checkpoint: %s: read after Close", f.path)
	}
	n := t.Numel()
	es := t.DType.Size()
	var idx []int
	lo, hi := t.Offset, t.Offset+n // element span [lo, hi)
	if n == 0 {
		hi = lo
	} else if !t.contiguous() {
		idx = make([]int, 0, n)
		last := t.Offset
		for i, d := range t.Shape {
			last += (d - 1) * t.Stride[i]
		}
		hi = last + 1
		stridedIndices(t.Shape, t.Stride, 0, &idx)
	}
	st := t.storage
	var storage []byte
	if st.off >= 0 {
		storage = f.m.data[st.off : st.off+st.numel*int64(es)]
	} else {
		b, err := readEntry(st.entry, st.numel*int64(es))
		if err != nil {
			return fmt.Errorf("checkpoint: %s: %q: %w", f.path, name, err)
		}
		if int64(len(b)) < st.numel*int64(es) {
			return fmt.Errorf("checkpoint: %s: %q: storage entry truncated", f.path, name)
		}
		storage = b
	}
	b := storage[lo*es : hi*es]
	f.m.willNeed(b)
	if err := fn(b, idx); err != nil {
		return fmt.Errorf("checkpoint: %s: %q: %w", f.path, name, err)
	}
	if st.off >= 0 {
		f.m.dontNeed(b)
	}
	return nil
}

// stridedIndices appends, in row-major order, the element offsets of a view
// (relative to its first element).
func stridedIndices(shape, stride []int, base int, out *[]int) {
	if len(shape) == 0 {
		*out = append(*out, base)
		return
	}
	if len(shape) == 1 {
		for i := 0; i < shape[0]; i++ {
			*out = append(*out, base+i*stride[0])
		}
		return
	}
	for i := 0; i < shape[0]; i++ {
		stridedIndices(shape[1:], stride[1:], base+i*stride[0], out)
	}
}
