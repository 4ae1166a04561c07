package checkpoint

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/osediff-go/osediff/tensor"
)

// SaveSafetensors writes tensors (any strides) to path as a safetensors file
// with every tensor stored as dtype (F32, F16 or BF16), through a temporary
// file renamed into place.
func SaveSafetensors(path string, tensors map[string]*tensor.Tensor, dtype DType, meta map[string]string) error {
	if dtype != F32 && dtype != F16 && dtype != BF16 {
		return fmt.Errorf("checkpoint: save: unsupported dtype %q", dtype)
	}
	names := make([]string, 0, len(tensors))
	for k := range tensors {
		names = append(names, k)
	}
	sort.Strings(names)
	hdr := map[string]any{}
	if len(meta) > 0 {
		hdr["__metadata__"] = meta
	}
	var off int64
	for _, k := range names {
		t := tensors[k]
		n := int64(t.Numel()) * int64(dtype.Size())
		hdr[k] = map[string]any{"dtype": dtype, "shape": append([]int{}, t.Shape()...), "data_offsets": []int64{off, off + n}}
		off += n
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("checkpoint: save: %w", err)
	}
	for len(hb)%8 != 0 { // keep the data section 8-byte aligned
		hb = append(hb, ' ')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("checkpoint: save: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	var b8 [8]byte
	binary.LittleEndian.PutUint64(b8[:], uint64(len(hb)))
	w.Write(b8[:])
	w.Write(hb)
	for _, k := range names {
		for _, v := range tensors[k].Contiguous().Data() {
			switch dtype {
			case F32:
				binary.LittleEndian.PutUint32(b8[:], math.Float32bits(v))
				w.Write(b8[:4])
			case F16:
				binary.LittleEndian.PutUint16(b8[:], tensor.F32ToF16(v))
				w.Write(b8[:2])
			case BF16:
				binary.LittleEndian.PutUint16(b8[:], tensor.F32ToBF16(v))
				w.Write(b8[:2])
			}
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint: save: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: save: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("checkpoint: save: %w", err)
	}
	return nil
}
