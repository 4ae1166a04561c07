package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/osediff-go/osediff/parallel"
)

// fma32 is a float32 fused multiply-add, a*b+c rounded once.
func fma32(a, b, c float32) float32 {
	r := math.FMA(float64(a), float64(b), float64(c)) // a*b exact, one rounding to 53 bits
	if bits := math.Float64bits(r); bits&(1<<29-1) != 1<<28 {
		return float32(r) // not a float32 tie: rounding again is exact rounding
	}
	// A tie after the first rounding: round the exact value once.
	x := new(big.Float).SetPrec(200).SetFloat64(float64(a))
	x.Mul(x, new(big.Float).SetFloat64(float64(b)))
	x.Add(x, new(big.Float).SetFloat64(float64(c)))
	f, _ := x.Float32()
	return f
}

// The indirect micro-kernels against the loop their declarations document,
// bit for bit (one rounded FMA per step, then the bias, then C), and against
// the strided kernel on the same B packed; no write outside the tile.
func TestIndirectMicroKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	n := 0
	for l := AVX2; l <= DetectedISA(); l++ {
		for _, ar := range gemmArchs[l] {
			if ar.ki == nil {
				continue
			}
			n++
			mr, nr := ar.mr, ar.nr
			for _, k := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 33, 255, 256, 257} {
				for v := 0; v < 4; v++ {
					acc, withBias, withPF := v&1, v&2 != 0, (k+v)%3 == 0
					name := fmt.Sprintf("%s/k=%d/acc=%d/bias=%v/pf=%v", ar.name, k, acc, withBias, withPF)
					lda := k + 3
					a := randSlice(r, mr*lda+1)
					img := randSlice(r, 4*k+nr+64)
					offs := make([]int, k+1)
					for p := range offs[:k] {
						offs[p] = r.IntN(len(img) - nr)
					}
					b := make([]float32, k*nr+1) // B packed: b[p*nr+j]
					for p := 0; p < k; p++ {
						copy(b[p*nr:(p+1)*nr], img[offs[p]:])
					}
					ldc := nr + 5
					c0 := randSlice(r, mr*ldc)
					bias := randSlice(r, mr)
					var bp, pf *float32
					if withBias {
						bp = &bias[0]
					}
					if withPF {
						pf = &img[r.IntN(nr)]
					}
					got := append([]float32(nil), c0...)
					ar.ki(k, &a[0], lda, &img[0], &offs[0], &got[0], ldc, acc, bp, pf)
					want := append([]float32(nil), c0...)
					ar.ks(k, &a[0], lda, &b[0], &want[0], ldc, acc, bp)
					sameBits(t, name+" vs strided kernel", got, want)
					for i := 0; i < mr; i++ {
						for j := 0; j < nr; j++ {
							var s float32
							for p := 0; p < k; p++ {
								s = fma32(a[i*lda+p], img[offs[p]+j], s)
							}
							if withBias {
								s += bias[i]
							}
							if acc != 0 {
								s += c0[i*ldc+j]
							}
							if g := got[i*ldc+j]; math.Float32bits(g) != math.Float32bits(s) {
								t.Fatalf("%s: C[%d,%d] = %g, want %g", name, i, j, g, s)
							}
						}
					}
				}
			}
		}
	}
	if n == 0 {
		t.Skip("no indirect micro-kernels at this level")
	}
}

// The convolutions with B read in place (gemmDirectB) give the packed
// path's bits, on every level, over awkward channel counts and widths, with
// and without bias, accumulation, a fused input transform, float16 weights
// and bands; so do those whose output width no tile divides, run over
// virtual widths (convVirtual), also where that wastes most and in
// sub-bands of one row.
func TestConvDirectB(t *testing.T) {
	defer func(v bool) { gemmDirectB = v }(gemmDirectB)
	defer func(b, c int) { convBandBytes, convBandMinCols = b, c }(convBandBytes, convBandMinCols)
	r := rand.New(rand.NewPCG(23, 24))
	inCs := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 33, 65}
	outCs := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 33, 127, 128, 129, 257}
	widths := []int{32, 64, 96, 48, 16, 40, 17}
	direct, virtual := 0, 0
	for _, l := range levels() {
		if l == Generic {
			continue
		}
		for ii, inC := range inCs {
			for oi, outC := range outCs {
				w := widths[(ii+oi)%len(widths)]
				h := 1 + (ii*3+oi)%5
				p := Conv2DParams{InC: inC, OutC: outC, KH: 3, KW: 3, StrideH: 1, StrideW: 1, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
				switch (ii + 2*oi) % 7 {
				case 3: // strided, the phase images of stride 2
					p.StrideH, p.StrideW, p.PadT, p.PadL = 2, 2, 0, 0
					w *= 2
				case 5: // dilated, asymmetric padding
					p.DilH, p.DilW, p.PadT, p.PadB, p.PadL, p.PadR = 2, 2, 2, 1, 2, 2
				case 6: // 1×1 with padding (the im2col path)
					p.KH, p.KW, p.PadT, p.PadB, p.PadL, p.PadR = 1, 1, 1, 0, 0, 0
					w = 31
				}
				const n = 2
				oh, ow := p.OutSize(h, w)
				x := randSlice(r, n*inC*h*w)
				wt := randSlice(r, outC*inC*p.KH*p.KW)
				var wh []uint16
				v := ii*len(outCs) + oi
				if v%5 == 2 {
					wh, wt = halfSlice(r, outC*inC*p.KH*p.KW)
				}
				var bias []float32
				if v%2 == 0 {
					bias = randSlice(r, outC)
				}
				var o ConvOptions
				o.Accumulate = v%3 == 1
				if v%4 == 3 {
					o.Pre = &ChannelAffine{Scale: randSlice(r, n*inC), Shift: randSlice(r, n*inC), SiLU: v%8 == 3}
				}
				y0 := randSlice(r, n*outC*oh*ow)
				name := fmt.Sprintf("%v/%d->%d/%dx%d/%+v/bias=%v/f16=%v/%+v", l, inC, outC, h, w, p, bias != nil, wh != nil, o)
				withISA(t, l, func() {
					if ar := pickConvArch(outC, ow, oh*ow); ow%ar.nr == 0 && ar.ki != nil {
						direct++
					}
					convBandBytes, convBandMinCols = 6<<20, 2048
					if v%6 == 1 {
						convBandBytes, convBandMinCols = 1, 1 // one output row per band
					}
					wm := F32(wt)
					if wh != nil {
						wm = Mat{F16: wh}
					}
					if ar := pickConvArch(outC, ow, oh*ow); ow%ar.nr != 0 && ar.ki != nil && p.KH*p.KW > 1 {
						virtual++
					}
					// Packed; direct (virtual widths where they waste little);
					// direct with every width virtual.
					var ys [3][]float32
					for i := range ys {
						gemmDirectB = i > 0
						minCols := convBandMinCols
						if i == 2 {
							convVirtualMaxPct = 1 << 20
							if v%3 == 0 { // sub-bands of one row
								convVirtualBytes, convBandMinCols = 1, 1
							}
						}
						ys[i] = append([]float32(nil), y0...)
						Conv2DEx(p, n, h, w, x, wm, bias, ys[i], o)
						convVirtualMaxPct, convVirtualBytes, convBandMinCols = 115, 8<<20, minCols
					}
					sameBits(t, name, ys[1], ys[0])
					sameBits(t, name+"/all virtual", ys[2], ys[0])
				})
			}
		}
	}
	if (direct == 0 || virtual == 0) && DetectedISA() > Generic {
		t.Fatalf("%d cases took the direct path, %d the virtual widths", direct, virtual)
	}
	t.Logf("%d cases on the direct path, %d on virtual widths", direct, virtual)
}

// BenchmarkDirectBOneCore compares, on one worker, the convolutions with
// the B panels read in place by the indirect micro-kernel (gemmDirectB) and
// packed, interleaved (best slice of each, see bestSliceGFLOPs).
func BenchmarkDirectBOneCore(b *testing.B) {
	old := parallel.Threads()
	parallel.SetThreads(1)
	defer parallel.SetThreads(old)
	defer func(v bool) { gemmDirectB = v }(gemmDirectB)
	fill := rampFill
	type shape struct {
		name  string
		flops float64
		run   func()
	}
	var shapes []shape
	// in channels, out channels, side, stride
	for _, cs := range [][4]int{{128, 128, 64, 1}, {256, 256, 32, 1}, {128, 128, 128, 1}, {256, 128, 64, 1}, {512, 64, 32, 1}, {128, 128, 64, 2}, {256, 256, 64, 2}} {
		ch, oc, side, st := cs[0], cs[1], cs[2], cs[3]
		p := Conv2DParams{InC: ch, OutC: oc, KH: 3, KW: 3, StrideH: st, StrideW: st, PadT: 1, PadB: 1, PadL: 1, PadR: 1}
		if st == 2 {
			p.PadT, p.PadL = 0, 0
		}
		oh, ow := p.OutSize(side, side)
		x, w, bias, y := fill(ch*side*side), fill(oc*ch*9), fill(oc), make([]float32, oc*oh*ow)
		shapes = append(shapes, shape{fmt.Sprintf("conv3x3_%d_%d_%d_s%d", ch, oc, side, st), 2 * float64(oc*ch*9) * float64(oh*ow),
			func() { Conv2D(p, 1, side, side, x, w, bias, y) }})
	}
	for i := 0; i < b.N; i++ {
		for _, l := range []ISA{AVX512, AVX2} {
			if l > DetectedISA() {
				continue
			}
			prev := SetISA(l)
			pk := perCoreFMARate()
			for _, s := range shapes {
				for r := 0; r < 3; r++ {
					var g [2]float64
					for k, on := range []bool{false, true} {
						gemmDirectB = on
						g[k] = bestSliceGFLOPs(s.flops, 8, s.run)
					}
					b.Logf("%v %-24s packed %6.1f  direct %6.1f GFLOP/s per core (%+5.1f%%, FMA loop %.0f)", l, s.name, g[0], g[1], 100*(g[1]/g[0]-1), pk)
				}
			}
			SetISA(prev)
		}
	}
}

// BenchmarkDirectB runs the convolutions of RunBenchmark on every worker
// with B packed and read in place, interleaved.
func BenchmarkDirectB(b *testing.B) {
	defer func(v bool) { gemmDirectB = v }(gemmDirectB)
	defer func(w time.Duration) { QuietWindow = w }(QuietWindow)
	QuietWindow = 250 * time.Millisecond
	for i := 0; i < b.N; i++ {
		for r := 0; r < 3; r++ {
			for _, name := range []string{"conv3x3_128_256", "conv3x3_256_128", "conv3x3_512_64"} {
				var g [2]float64
				for k, on := range []bool{false, true} {
					gemmDirectB = on
					res, err := RunBenchmark(name, 3)
					if err != nil {
						b.Fatal(err)
					}
					g[k] = res.GFLOPs
				}
				b.Logf("%-18s packed %6.1f  direct %6.1f GFLOP/s (%+5.1f%%)", name, g[0], g[1], 100*(g[1]/g[0]-1))
			}
		}
	}
}
