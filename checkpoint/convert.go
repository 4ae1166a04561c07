package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// convertGrain is the number of elements below which conversion stays on the
// calling goroutine.
const convertGrain = 1 << 16

var (
	f16Once  sync.Once
	f16Table []float32 // all 65536 binary16 values widened
)

func f16Lookup() []float32 {
	f16Once.Do(func() {
		f16Table = make([]float32, 1<<16)
		for i := range f16Table {
			f16Table[i] = tensor.F16ToF32(uint16(i))
		}
	})
	return f16Table
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// decodeFloat32 converts len(dst) little-endian elements of dtype from b
// (len(b) == len(dst)*dtype.Size()) into dst, in parallel for large tensors.
func decodeFloat32(dt DType, b []byte, dst []float32) error {
	es := dt.Size()
	if es == 0 {
		return fmt.Errorf("unsupported dtype %q", dt)
	}
	if len(b) != len(dst)*es {
		return fmt.Errorf("%d bytes for %d %s values", len(b), len(dst), dt)
	}
	var fn func(b []byte, dst []float32)
	switch dt {
	case F32:
		fn = decodeF32
	case F16:
		tab := f16Lookup()
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = tab[binary.LittleEndian.Uint16(b[2*i:])]
			}
		}
	case BF16:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
			}
		}
	case F64:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
			}
		}
	case I64:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(int64(binary.LittleEndian.Uint64(b[8*i:])))
			}
		}
	case I32:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(int32(binary.LittleEndian.Uint32(b[4*i:])))
			}
		}
	case I16:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(int16(binary.LittleEndian.Uint16(b[2*i:])))
			}
		}
	case I8:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(int8(b[i]))
			}
		}
	case U8, Bool:
		fn = func(b []byte, dst []float32) {
			for i := range dst {
				dst[i] = float32(b[i])
			}
		}
	default:
		return fmt.Errorf("unsupported dtype %q", dt)
	}
	parallel.For(len(dst), convertGrain, func(lo, hi int) {
		fn(b[lo*es:hi*es], dst[lo:hi])
	})
	return nil
}

func decodeF32(b []byte, dst []float32) {
	if len(dst) == 0 {
		return
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(dst)))
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// decodeInt64 converts integer (or integral float) elements to int64.
func decodeInt64(dt DType, b []byte, dst []int64) error {
	es := dt.Size()
	if es == 0 || len(b) != len(dst)*es {
		return fmt.Errorf("%d bytes for %d %s values", len(b), len(dst), dt)
	}
	for i := range dst {
		switch dt {
		case I64:
			dst[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		case I32:
			dst[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		case I16:
			dst[i] = int64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		case I8:
			dst[i] = int64(int8(b[i]))
		case U8, Bool:
			dst[i] = int64(b[i])
		default:
			f := make([]float32, 1)
			if err := decodeFloat32(dt, b[i*es:(i+1)*es], f); err != nil {
				return err
			}
			if float64(f[0]) != math.Trunc(float64(f[0])) {
				return fmt.Errorf("value %v at %d is not an integer", f[0], i)
			}
			dst[i] = int64(f[0])
		}
	}
	return nil
}
