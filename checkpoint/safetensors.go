package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// MaxSafetensorsHeader is the largest header accepted (the reference
// implementation's limit).
const MaxSafetensorsHeader = 100 << 20

// ErrMalformed is wrapped by every error about a malformed file.
var ErrMalformed = errors.New("malformed checkpoint")

// Safetensors is a memory-mapped .safetensors file: a Source whose tensors
// are read (and converted) only when asked for. It is safe for concurrent
// reads; Close releases the mapping.
type Safetensors struct {
	path    string
	mu      sync.RWMutex
	m       *mapping // nil once closed
	data    []byte   // the data section inside the mapping
	entries map[string]stEntry
	keys    []string
	meta    map[string]string
}

type stEntry struct {
	info       Info
	begin, end int64 // byte range inside data
}

// OpenSafetensors maps path and validates its header: size limit, well-formed
// JSON without duplicate keys, known dtypes, sane shapes, dtype × shape equal
// to the byte length, offsets inside the data section and no overlaps.
func OpenSafetensors(path string) (*Safetensors, error) {
	m, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	st, err := parseSafetensors(m.data)
	if err != nil {
		m.close()
		return nil, fmt.Errorf("checkpoint: %s: %w", path, err)
	}
	st.path = path
	st.m = m
	return st, nil
}

// ParseSafetensorsHeader validates the header of a safetensors file held in
// memory (the whole file, header and data) and lists its tensors, sorted by
// name, and its __metadata__.
func ParseSafetensorsHeader(file []byte) ([]Info, map[string]string, error) {
	st, err := parseSafetensors(file)
	if err != nil {
		return nil, nil, err
	}
	infos := make([]Info, len(st.keys))
	for i, k := range st.keys {
		infos[i] = st.entries[k].info
	}
	return infos, st.meta, nil
}

type stHeaderEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parseSafetensors(file []byte) (*Safetensors, error) {
	if len(file) < 8 {
		return nil, fmt.Errorf("%w: %d bytes, too short for a safetensors header", ErrMalformed, len(file))
	}
	n := binary.LittleEndian.Uint64(file)
	if n > MaxSafetensorsHeader {
		return nil, fmt.Errorf("%w: header of %d bytes exceeds the %d limit", ErrMalformed, n, MaxSafetensorsHeader)
	}
	if n > uint64(len(file)-8) {
		return nil, fmt.Errorf("%w: header of %d bytes past the end of a %d-byte file", ErrMalformed, n, len(file))
	}
	hdr := file[8 : 8+n]
	data := file[8+n:]
	st := &Safetensors{data: data, entries: map[string]stEntry{}}

	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.DisallowUnknownFields()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: header JSON: %v", ErrMalformed, err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: header JSON: key %v", ErrMalformed, tok)
		}
		if seen[key] {
			return nil, fmt.Errorf("%w: duplicate key %q", ErrMalformed, key)
		}
		seen[key] = true
		if key == "__metadata__" {
			if err := dec.Decode(&st.meta); err != nil {
				return nil, fmt.Errorf("%w: __metadata__ must map strings to strings: %v", ErrMalformed, err)
			}
			continue
		}
		var e stHeaderEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, key, err)
		}
		ent, err := checkEntry(key, e, int64(len(data)))
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, key, err)
		}
		st.entries[key] = ent
		st.keys = append(st.keys, key)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("%w: header JSON is not closed", ErrMalformed)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing bytes after the header JSON", ErrMalformed)
	}
	sort.Strings(st.keys)

	// No two non-empty tensors may share bytes.
	byBegin := make([]stEntry, 0, len(st.entries))
	for _, e := range st.entries {
		if e.end > e.begin {
			byBegin = append(byBegin, e)
		}
	}
	sort.Slice(byBegin, func(i, j int) bool { return byBegin[i].begin < byBegin[j].begin })
	for i := 1; i < len(byBegin); i++ {
		if byBegin[i].begin < byBegin[i-1].end {
			return nil, fmt.Errorf("%w: tensors %q and %q overlap", ErrMalformed, byBegin[i-1].info.Name, byBegin[i].info.Name)
		}
	}
	return st, nil
}

func checkEntry(name string, e stHeaderEntry, dataLen int64) (stEntry, error) {
	if name == "" {
		return stEntry{}, errors.New("empty tensor name")
	}
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return stEntry{}, errors.New("needs dtype, shape and data_offsets")
	}
	dt := DType(*e.DType)
	es := dt.Size()
	if es == 0 {
		return stEntry{}, fmt.Errorf("unsupported dtype %q", *e.DType)
	}
	if len(*e.Shape) > 32 {
		return stEntry{}, fmt.Errorf("rank %d too large", len(*e.Shape))
	}
	numel, err := checkedNumel(*e.Shape, es, dataLen)
	if err != nil {
		return stEntry{}, fmt.Errorf("%v for a %d-byte data section", err, dataLen)
	}
	off := *e.DataOffsets
	if len(off) != 2 {
		return stEntry{}, fmt.Errorf("data_offsets has %d values, want 2", len(off))
	}
	begin, end := off[0], off[1]
	if begin < 0 || end < begin || end > dataLen {
		return stEntry{}, fmt.Errorf("data_offsets [%d, %d] outside the %d-byte data section", begin, end, dataLen)
	}
	if want := numel * int64(es); end-begin != want {
		return stEntry{}, fmt.Errorf("%s %v needs %d bytes, data_offsets give %d", dt, *e.Shape, want, end-begin)
	}
	shape := make([]int, len(*e.Shape))
	for i, d := range *e.Shape {
		shape[i] = int(d)
	}
	return stEntry{info: Info{Name: name, DType: dt, Shape: shape}, begin: begin, end: end}, nil
}

// Path is the file this was opened from.
func (s *Safetensors) Path() string { return s.path }

// Keys lists the tensor names, sorted.
func (s *Safetensors) Keys() []string { return append([]string(nil), s.keys...) }

// Info describes one tensor.
func (s *Safetensors) Info(name string) (Info, bool) {
	e, ok := s.entries[name]
	if !ok {
		return Info{}, false
	}
	e.info.Shape = append([]int(nil), e.info.Shape...)
	return e.info, true
}

// Metadata returns the __metadata__ map (nil when absent).
func (s *Safetensors) Metadata() map[string]string { return s.meta }

// ReadFloat32 converts one tensor straight from the mapping into dst.
func (s *Safetensors) ReadFloat32(name string, dst []float32) error {
	return s.read(name, len(dst), func(dt DType, b []byte) error { return decodeFloat32(dt, b, dst) })
}

// ReadInt64 reads an integer tensor exactly.
func (s *Safetensors) ReadInt64(name string, dst []int64) error {
	return s.read(name, len(dst), func(dt DType, b []byte) error { return decodeInt64(dt, b, dst) })
}

// Bytes returns a copy of a tensor's raw little-endian bytes.
func (s *Safetensors) Bytes(name string) ([]byte, Info, error) {
	info, ok := s.Info(name)
	if !ok {
		return nil, Info{}, fmt.Errorf("checkpoint: %s: %q: %w", s.path, name, ErrNotFound)
	}
	var out []byte
	err := s.read(name, info.Numel(), func(_ DType, b []byte) error { out = append([]byte(nil), b...); return nil })
	return out, info, err
}

func (s *Safetensors) read(name string, n int, fn func(DType, []byte) error) error {
	e, ok := s.entries[name]
	if !ok {
		return fmt.Errorf("checkpoint: %s: %q: %w", s.path, name, ErrNotFound)
	}
	if n != e.info.Numel() {
		return fmt.Errorf("checkpoint: %s: %q: destination has %d values, tensor %v has %d", s.path, name, n, e.info.Shape, e.info.Numel())
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.data == nil && e.end > e.begin {
		return fmt.Errorf("checkpoint: %s: read after Close", s.path)
	}
	b := s.data[e.begin:e.end:e.end]
	if s.m != nil {
		s.m.willNeed(b)
	}
	if err := fn(e.info.DType, b); err != nil {
		return fmt.Errorf("checkpoint: %s: %q: %w", s.path, name, err)
	}
	if s.m != nil {
		s.m.dontNeed(b) // drop the file pages from our resident set: no double memory
	}
	return nil
}

// Close unmaps the file. Reads after Close fail.
func (s *Safetensors) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		return nil
	}
	err := s.m.close()
	s.m, s.data = nil, nil
	return err
}
