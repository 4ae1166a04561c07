package checkpoint

import (
	"fmt"
	"testing"
)

// BenchmarkDecode measures the conversion into float32 (bytes/s of input).
func BenchmarkDecode(b *testing.B) {
	const n = 1 << 22
	for _, dt := range []DType{F32, F16, BF16} {
		b.Run(fmt.Sprint(dt), func(b *testing.B) {
			src := make([]byte, n*dt.Size())
			for i := range src {
				src[i] = byte(i * 7)
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if err := decodeFloat32(dt, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
