package kernels

import (
	"fmt"
	"sync/atomic"
)

// ISA is an instruction-set level of the fast paths.
type ISA int

// ISA levels, lowest first.
const (
	Generic ISA = iota // the pure-Go reference paths
	AVX2               // AVX2 + FMA, 8-lane ymm kernels
	AVX512             // AVX-512 F/DQ/BW/VL, 16-lane zmm kernels
)

func (i ISA) String() string {
	switch i {
	case Generic:
		return "generic"
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return fmt.Sprintf("ISA(%d)", int(i))
}

var (
	detected ISA          // best level this CPU and build support
	current  atomic.Int32 // level in use
)

func init() { current.Store(int32(detected)) }

// DetectedISA is the best level the CPU (and the build: `noasm` forces
// Generic) supports.
func DetectedISA() ISA { return detected }

// CurrentISA is the level the kernels use now.
func CurrentISA() ISA { return ISA(current.Load()) }

// SetISA selects the level used by every kernel (clamped to DetectedISA) and
// returns the previous one. It is meant for tests and benchmarks: switch it
// only while no kernel runs.
func SetISA(l ISA) ISA {
	l = max(Generic, min(l, detected))
	return ISA(current.Swap(int32(l)))
}

// gemmArch is one register-tile micro-kernel family: C[mr×nr] (+)= A·B over k
// with packed B panels [k][nr], and A either packed [k][mr] (kp) or strided
// rows (ks; ki reads the rows of B in place); a non-nil bias adds bias[i]
// to row i of the tile.
type gemmArch struct {
	name   string
	mr, nr int
	kp, ks func(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)
	// ki is ks with an indirect B, B(p,j) = b[offs[p]+j], that also
	// prefetches pf[offs[p]:][:nr] when pf != nil (nil: no such kernel).
	ki   func(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)
	pack func(dst, src *float32, offs *int, k int) // packRows of nr floats
}

// vecOps are the vectorised element-wise loops of one level; n is always a
// multiple of w (the wrappers in eltwise.go handle tails).
type vecOps struct {
	w           int
	expScaleSum func(x *float32, n int, scale, shift float32) float32
	softmaxTile func(x *float32, lds, rows, n int, scale float32, m, l, acc *float32, ldacc, nacc int)
	maxv        func(x *float32, n int) float32
	affineAct   func(x, y *float32, n int, a, b float32, act int)
	sigMul      func(x, y *float32, n int, alpha float32)
	sumStats    func(x *float32, n int, shift float32) (sum, sumsq float64)
	normAffine  func(x, y, gamma, beta *float32, n int, m, inv float32)
	addv, mulv  func(dst, a, b *float32, n int)
	axpy        func(dst, a *float32, s float32, b *float32, n int)
	scaleAdd    func(dst, a *float32, n int, s, t float32)
	gelu        func(x, y *float32, n int)
	geglu       func(a, g, y *float32, n int)
	fmaLoop     func(n int) // 12 independent register FMAs per iteration
	widenF16    func(dst *float32, src *uint16, n int)
	widenF16PF  func(dst *float32, src *uint16, n int, pf int) // and prefetch src+pf bytes
	prefetch    func(p *float32, stride, rows, lines int)      // prefetchRows
	// packT and packTH pack a transposed B panel from float32 or float16
	// rows (packT512; nil where the level has none).
	packT  func(dst *float32, nr int, src *float32, ld, kc int)
	packTH func(dst *float32, nr int, src *uint16, ld, kc int)
	even   func(dst, src *float32, n int)  // even512 (nil: none)
	zip    func(dst, a, b *float32, n int) // zip512 (nil: none)
}

var (
	gemmArchs [AVX512 + 1][]*gemmArch // per level; [0] is the default tile
	vecTables [AVX512 + 1]*vecOps
)

// fast returns the vector table of the current level, or nil for Generic.
func fast() *vecOps { return vecTables[CurrentISA()] }
