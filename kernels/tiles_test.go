package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Every micro-kernel of every level, packed and strided A, with and without
// accumulation and bias, against the loop its declaration documents
// (tolerance 1e-5 of sum |A||B| + |C| + |bias|: float32 summation order).
func TestMicroKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for l := AVX2; l <= DetectedISA(); l++ {
		for _, ar := range gemmArchs[l] {
			mr, nr := ar.mr, ar.nr
			for _, k := range []int{0, 1, 7, 31, 256} {
				for _, strided := range []bool{false, true} {
					for _, acc := range []int{0, 1} {
						for _, withBias := range []bool{false, true} {
							name := fmt.Sprintf("%s/k=%d/strided=%v/acc=%d/bias=%v", ar.name, k, strided, acc, withBias)
							lda := k + 3
							as := randSlice(r, mr*lda+1)  // strided: A(i,p) = as[i*lda+p]
							ap := make([]float32, k*mr+1) // packed: A(i,p) = ap[p*mr+i]
							b := randSlice(r, k*nr+1)     // B(p,j) = b[p*nr+j]
							ldc := nr + 5
							c0 := randSlice(r, mr*ldc)
							bias := randSlice(r, mr)
							for i := 0; i < mr; i++ {
								for p := 0; p < k; p++ {
									ap[p*mr+i] = as[i*lda+p]
								}
							}
							c := append([]float32(nil), c0...)
							var bp *float32
							if withBias {
								bp = &bias[0]
							}
							if strided {
								ar.ks(k, &as[0], lda, &b[0], &c[0], ldc, acc, bp)
							} else {
								ar.kp(k, &ap[0], 0, &b[0], &c[0], ldc, acc, bp)
							}
							for i := 0; i < mr; i++ {
								for j := 0; j < ldc; j++ {
									got := c[i*ldc+j]
									if j >= nr {
										if got != c0[i*ldc+j] {
											t.Fatalf("%s: wrote C[%d,%d] past the tile", name, i, j)
										}
										continue
									}
									var s, mag float64
									for p := 0; p < k; p++ {
										s += float64(as[i*lda+p]) * float64(b[p*nr+j])
										mag += math.Abs(float64(as[i*lda+p]) * float64(b[p*nr+j]))
									}
									if withBias {
										s += float64(bias[i])
										mag += math.Abs(float64(bias[i]))
									}
									if acc == 1 {
										s += float64(c0[i*ldc+j])
										mag += math.Abs(float64(c0[i*ldc+j]))
									}
									if d := math.Abs(float64(got) - s); d > 1e-5*(mag+1e-30) && d > 0 {
										t.Fatalf("%s: C[%d,%d] = %g, want %g", name, i, j, got, s)
									}
								}
							}
						}
					}
				}
			}
		}
	}
}
