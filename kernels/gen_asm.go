//go:build ignore

// gen_asm writes kernels_amd64.s: the GEMM micro-kernels and the vectorised
// element-wise loops, once for AVX-512 (zmm, suffix 512) and once for
// AVX2+FMA (ymm, suffix 256). Run it with `go generate ./kernels`.
package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
)

var out bytes.Buffer

// p emits one instruction. The Go linker aligns ·kconst to 32 bytes only, so
// a 64-byte constant operand would straddle two cache lines on every load
// (measured on Zen 5: exp, SiLU, GELU and GEGLU loops 1.9–2.4× slower). A zmm
// instruction therefore reads its constant as an embedded broadcast of the
// first element ({1to16}), and a zmm load of a constant becomes VBROADCASTSS.
// Ymm operands are 32-byte aligned and stay full-width loads.
func p(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if strings.Contains(line, "·kconst") && zmmOperand.MatchString(line) {
		op, rest, _ := strings.Cut(line, " ")
		if op == "VMOVUPS" {
			op = "VBROADCASTSS"
		} else {
			op += ".BCST"
		}
		line = op + " " + rest
	}
	out.WriteString("\t" + line + "\n")
}

var zmmOperand = regexp.MustCompile(`\bZ\d+\b`)

func label(s string) { fmt.Fprintf(&out, "%s:\n", s) }

// isa describes one vector width.
type isa struct {
	suffix string
	w      int    // float32 lanes
	reg    string // "Z" or "Y"
	nregs  int
}

var (
	avx512 = isa{"512", 16, "Z", 32}
	avx2   = isa{"256", 8, "Y", 16}
)

func (s isa) r(i int) string { return fmt.Sprintf("%s%d", s.reg, i) }

// x returns the 128-bit name of register i.
func x(i int) string { return fmt.Sprintf("X%d", i) }

// y returns the 256-bit name of register i.
func y(i int) string { return fmt.Sprintf("Y%d", i) }

// Constants: each is repeated 16 times (64 bytes) so that both widths can use
// it as a full-width memory operand.
var constNames []string
var constBits []uint32

func defConst(name string, bits uint32) {
	constNames = append(constNames, name)
	constBits = append(constBits, bits)
}

func f32(v float64) uint32 { return math.Float32bits(float32(v)) }

func c(name string) string {
	for i, n := range constNames {
		if n == name {
			return fmt.Sprintf("·kconst+%d(SB)", i*64)
		}
	}
	panic("no constant " + name)
}

func init() {
	defConst("log2e", f32(1.44269504088896341))
	defConst("ln2hi", f32(0.693359375))
	defConst("ln2lo", f32(-2.12194440e-4))
	defConst("explo", f32(-87.33654))
	defConst("exphi", f32(88.3762626647949))
	defConst("ep0", f32(1.9875691500e-4))
	defConst("ep1", f32(1.3981999507e-3))
	defConst("ep2", f32(8.3334519073e-3))
	defConst("ep3", f32(4.1665795894e-2))
	defConst("ep4", f32(1.6666665459e-1))
	defConst("ep5", f32(5.0000001201e-1))
	// exp(r) ≈ 1 + r·(sp0 + r·(sp1 + r·(sp2 + r·(sp3 + r·sp4)))) on
	// |r| ≤ ln2/2: a degree-5 fit of the relative error (Lawson's
	// iteration; 9.2e-8 in exact arithmetic, 2.5 ulps evaluated in float32).
	defConst("sp0", f32(9.9999970198e-01))
	defConst("sp1", f32(4.9999147654e-01))
	defConst("sp2", f32(1.6667638719e-01))
	defConst("sp3", f32(4.1898161173e-02))
	defConst("sp4", f32(8.2902722061e-03))
	defConst("one", f32(1))
	defConst("i127", 127)
	defConst("half", f32(0.5))
	defConst("absmask", 0x7fffffff)
	defConst("signmask", 0x80000000)
	defConst("rsqrt2", f32(1/math.Sqrt2))
	defConst("zero", 0)
	defConst("negone", f32(-1))
	for i, v := range erfSmall {
		defConst(fmt.Sprintf("es%d", i), f32(v))
	}
	for i, v := range erfcMid {
		defConst(fmt.Sprintf("em%d", i), f32(v))
	}
	for i, v := range erfcBig {
		defConst(fmt.Sprintf("eb%d", i), f32(v))
	}
	defConst("esa", f32(erfSmallScale[0]))
	defConst("esb", f32(erfSmallScale[1]))
	defConst("ema", f32(erfcMidScale[0]))
	defConst("emb", f32(erfcMidScale[1]))
	defConst("eba", f32(erfcBigScale[0]))
	defConst("ebb", f32(erfcBigScale[1]))
	defConst("erfsplit", f32(erfSplit))
	defConst("erfsplit2", f32(erfSplit2))
	defConst("erfmax", f32(erfMax))
}

// ---------------------------------------------------------------- GEMM

// gemmKernel emits C[mr×nv*w] (+)= A·B for k steps. Packed A is [k][mr];
// strided A is mr rows of row stride lda. Packed B is [k][nv*w].
func gemmKernel(s isa, mr, nv int, strided bool) { gemmKernelB(s, mr, nv, strided, false) }

// gemmKernelI emits the strided-A micro-kernel with an indirect B operand:
// B(p,j) = b[offs[p]+j] (offs in floats), e.g. the implicit im2col of a
// zero-padded image read in place. When its argument pf is not nil, each
// step also prefetches the same row of the panel at pf (the next one):
// pf[offs[p] : offs[p]+nv*w].
func gemmKernelI(s isa, mr, nv int) { gemmKernelB(s, mr, nv, true, true) }

func gemmKernelB(s isa, mr, nv int, strided, indirect bool) {
	mode := map[bool]string{false: "p", true: "s"}[strided]
	if indirect {
		mode = "i"
		if !strided || mr > 14 {
			panic("indirect B needs strided A and mr <= 14")
		}
	}
	name := fmt.Sprintf("gemm%s%s%dx%d", s.suffix, mode, mr, nv*s.w)
	nacc := mr * nv
	if nacc+nv+2 > s.nregs {
		panic("too many registers for " + name)
	}
	bReg := func(j int) string { return s.r(nacc + j) }
	aReg := func(t int) string { return s.r(nacc + nv + t%2) }
	acc := func(i, j int) string { return s.r(i*nv + j) }
	// Argument offsets: indirect kernels take offs after b.
	argC, argLdc, argAcc, argBias, argPf, frame := 32, 40, 48, 56, 0, 64
	if indirect {
		argC, argLdc, argAcc, argBias, argPf, frame = 40, 48, 56, 64, 72, 80
		fmt.Fprintf(&out, "\n// func %s(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)\n", name)
	} else {
		fmt.Fprintf(&out, "\n// func %s(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)\n", name)
	}
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-%d\n", name, frame)
	p("MOVQ k+0(FP), CX")
	p("MOVQ a+8(FP), SI")
	p("MOVQ lda+16(FP), R11")
	p("SHLQ $2, R11")
	p("MOVQ b+24(FP), DI")
	p("MOVQ c+%d(FP), DX", argC)
	p("MOVQ ldc+%d(FP), R8", argLdc)
	p("SHLQ $2, R8")
	p("MOVQ acc+%d(FP), R9", argAcc)
	if strided {
		p("LEAQ (R11)(R11*2), R12") // 3
		p("LEAQ (R11)(R11*4), R13") // 5
		p("LEAQ (R12)(R12*1), R14") // 6
		p("LEAQ (R14)(R11*1), AX")  // 7
		p("LEAQ (SI)(AX*1), R10")   // row 7
		if indirect {
			p("MOVQ offs+32(FP), BX") // rows 0..13 need SI and R10 only: BX walks offs
		} else {
			p("LEAQ (R10)(AX*1), BX") // row 14
		}
	}
	// Prefetch the C tile (nv+1 lines per row covers a misaligned row) so
	// that the final load/store does not wait on memory.
	p("MOVQ DX, AX")
	for i := 0; i < mr; i++ {
		for j := 0; j <= nv*s.w*4/64; j++ {
			p("PREFETCHT0 %d(AX)", j*64)
		}
		if i < mr-1 {
			p("ADDQ R8, AX")
		}
	}
	for i := 0; i < nacc; i++ {
		if s.reg == "Z" {
			p("VPXORD %s, %s, %s", s.r(i), s.r(i), s.r(i))
		} else {
			p("VXORPS %s, %s, %s", s.r(i), s.r(i), s.r(i))
		}
	}
	lp := name + "loop"
	st := name + "store"
	p("TESTQ CX, CX")
	p("JEQ %s", st)
	// body emits one k step; with pf it also prefetches the step's B row of
	// the next panel (at DX + offs[p] floats).
	body := func(pf bool) {
		if indirect {
			p("MOVQ (BX), AX")
			for j := 0; j < nv; j++ {
				p("VMOVUPS %d(DI)(AX*4), %s", j*s.w*4, bReg(j))
			}
			if pf {
				for o := 0; o < nv*s.w*4; o += 64 {
					p("PREFETCHT0 %d(DX)(AX*4)", o)
				}
				if nv*s.w*4%64 == 0 {
					// A misaligned row ends in one more line.
					p("PREFETCHT0 %d(DX)(AX*4)", nv*s.w*4-4)
				}
			}
		} else {
			for j := 0; j < nv; j++ {
				p("VMOVUPS %d(DI), %s", j*s.w*4, bReg(j))
			}
		}
		for i := 0; i < mr; i++ {
			var src string
			if !strided {
				src = fmt.Sprintf("%d(SI)", i*4)
			} else {
				// Row i is base + (i%7)·lda, with R11 = lda, R12 = 3·lda,
				// R13 = 5·lda, R14 = 6·lda.
				base := []string{"SI", "R10", "BX"}[i/7]
				src = "(" + base + ")" + []string{"", "(R11*1)", "(R11*2)", "(R12*1)", "(R11*4)", "(R13*1)", "(R14*1)"}[i%7]
			}
			p("VBROADCASTSS %s, %s", src, aReg(i))
			for j := 0; j < nv; j++ {
				p("VFMADD231PS %s, %s, %s", aReg(i), bReg(j), acc(i, j))
			}
		}
		if strided {
			p("ADDQ $4, SI")
			p("ADDQ $4, R10")
			if mr > 14 {
				p("ADDQ $4, BX")
			}
		} else {
			p("ADDQ $%d, SI", mr*4)
		}
		if indirect {
			p("ADDQ $8, BX")
		} else {
			p("ADDQ $%d, DI", nv*s.w*4)
		}
		p("DECQ CX")
	}
	if indirect {
		// DX (c) is free during the loop: it holds pf, and the loop
		// without prefetches runs when pf is nil.
		p("MOVQ pf+%d(FP), DX", argPf)
		p("TESTQ DX, DX")
		p("JEQ %s", lp)
		label(lp + "pf")
		body(true)
		p("JNZ %spf", lp)
		p("JMP %s", st)
	}
	label(lp)
	body(false)
	p("JNZ %s", lp)
	label(st)
	if indirect {
		p("MOVQ c+%d(FP), DX", argC)
	}
	// Bias: every row i of the tile gets bias[i] added (when bias != nil).
	p("MOVQ bias+%d(FP), BX", argBias)
	p("TESTQ BX, BX")
	p("JEQ %snobias", st)
	for i := 0; i < mr; i++ {
		p("VBROADCASTSS %d(BX), %s", i*4, aReg(0))
		for j := 0; j < nv; j++ {
			p("VADDPS %s, %s, %s", aReg(0), acc(i, j), acc(i, j))
		}
	}
	label(st + "nobias")
	p("TESTQ R9, R9")
	p("JEQ %sonly", st)
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("VADDPS %d(DX), %s, %s", j*s.w*4, acc(i, j), acc(i, j))
			p("VMOVUPS %s, %d(DX)", acc(i, j), j*s.w*4)
		}
		p("ADDQ R8, DX")
	}
	p("VZEROUPPER")
	p("RET")
	label(st + "only")
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("VMOVUPS %s, %d(DX)", acc(i, j), j*s.w*4)
		}
		p("ADDQ R8, DX")
	}
	p("VZEROUPPER")
	p("RET")
}

// packRows copies nr floats from src+offs[p] (in floats) to dst+p*nr for p < k.
func packRows(s isa, nv int) {
	name := fmt.Sprintf("packRows%s_%d", s.suffix, nv*s.w)
	fmt.Fprintf(&out, "\n// func %s(dst, src *float32, offs *int, k int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-32\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ offs+16(FP), BX")
	p("MOVQ k+24(FP), CX")
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	p("MOVQ (BX), AX")
	for j := 0; j < nv; j++ {
		p("VMOVUPS %d(SI)(AX*4), %s", j*s.w*4, s.r(j))
	}
	for j := 0; j < nv; j++ {
		p("VMOVUPS %s, %d(DI)", s.r(j), j*s.w*4)
	}
	p("ADDQ $8, BX")
	p("ADDQ $%d, DI", nv*s.w*4)
	p("DECQ CX")
	p("JNZ %sloop", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// ---------------------------------------------------------------- math

// exp computes v = exp(v) in place with temporaries t1, t2, t3
// (Cephes expf: range reduction by ln2, degree-6 polynomial, 2^n scaling).
func exp(s isa, v, t1, t2, t3 string) {
	expReduce(s, v, t1)
	p("VMOVUPS %s, %s", c("ep0"), t2)
	for i := 1; i <= 5; i++ {
		p("VFMADD213PS %s, %s, %s", c(fmt.Sprintf("ep%d", i)), v, t2)
	}
	p("VMULPS %s, %s, %s", v, v, t3)
	p("VFMADD213PS %s, %s, %s", v, t3, t2) // t2 = t3*t2 + v
	p("VADDPS %s, %s, %s", c("one"), t2, t2)
	expScale(s, t1, t2, v)
}

// expReduce clamps v to exp's range and splits it as v = n·ln2 + r:
// n (rounded) in t1, r in v.
func expReduce(s isa, v, t1 string) {
	p("VMAXPS %s, %s, %s", c("explo"), v, v)
	p("VMINPS %s, %s, %s", c("exphi"), v, v)
	p("VMULPS %s, %s, %s", c("log2e"), v, t1)
	if s.reg == "Z" {
		p("VRNDSCALEPS $0, %s, %s", t1, t1)
	} else {
		p("VROUNDPS $0, %s, %s", t1, t1)
	}
	p("VFNMADD231PS %s, %s, %s", c("ln2hi"), t1, v)
	p("VFNMADD231PS %s, %s, %s", c("ln2lo"), t1, v)
}

// expScale sets dst = e·2^n, e = exp(r) from the polynomial, n in t1.
func expScale(s isa, t1, e, dst string) {
	if s.reg == "Z" {
		p("VSCALEFPS %s, %s, %s", t1, e, dst)
	} else {
		p("VCVTPS2DQ %s, %s", t1, t1)
		p("VPADDD %s, %s, %s", c("i127"), t1, t1)
		p("VPSLLD $23, %s, %s", t1, t1)
		p("VMULPS %s, %s, %s", t1, e, dst)
	}
}

// sigmul computes v = v * sigmoid(alpha*v) = v / (1 + exp(-alpha*v)); alpha
// is in register al (negated alpha), temps t1..t4.
func sigmul(s isa, v, nal, t1, t2, t3, t4 string) {
	p("VMULPS %s, %s, %s", nal, v, t4)
	if s.reg != "Z" {
		exp(s, t4, t1, t2, t3)
		p("VADDPS %s, %s, %s", c("one"), t4, t4)
		p("VDIVPS %s, %s, %s", t4, v, v)
		return
	}
	// exp as in exp, with the degree-5 polynomial sp (a sigmoid needs no
	// more: 1 + exp(-x) is 1/σ; three fewer operations than exp's degree 7).
	expReduce(s, t4, t1)
	p("VMOVUPS %s, %s", c("sp4"), t2)
	for i := 3; i >= 0; i-- {
		p("VFMADD213PS %s, %s, %s", c(fmt.Sprintf("sp%d", i)), t4, t2)
	}
	p("VFMADD213PS %s, %s, %s", c("one"), t4, t2)
	expScale(s, t1, t2, t4)
	p("VADDPS %s, %s, %s", c("one"), t4, t4)
	// v / d as v * (1/d): VRCP14PS (2^-14) and one Newton step,
	// r += r*(1 - d*r), give 1/d to about 2^-27 at a fraction of
	// VDIVPS's cost (an infinite d gives r = 0: x/inf = 0 as before).
	p("VRCP14PS %s, %s", t4, t1)
	p("VMOVUPS %s, %s", c("one"), t2)
	p("VFNMADD231PS %s, %s, %s", t1, t4, t2) // t2 = 1 - d*r
	p("VFMADD231PS %s, %s, %s", t2, t1, t1)  // r += r*t2
	p("VMULPS %s, %s, %s", t1, v, v)
}

// hsum reduces vector register index i to a scalar in X(i) (clobbers tmp).
func hsum(s isa, i, tmp int) {
	if s.reg == "Z" {
		p("VEXTRACTF32X8 $1, Z%d, Y%d", i, tmp)
		p("VADDPS Y%d, Y%d, Y%d", tmp, i, i)
	}
	p("VEXTRACTF128 $1, Y%d, X%d", i, tmp)
	p("VADDPS X%d, X%d, X%d", tmp, i, i)
	p("VMOVHLPS X%d, X%d, X%d", i, tmp, tmp)
	p("VADDPS X%d, X%d, X%d", tmp, i, i)
	p("VPSHUFD $1, X%d, X%d", i, tmp)
	p("VADDSS X%d, X%d, X%d", tmp, i, i)
}

func hmax(s isa, i, tmp int) {
	if s.reg == "Z" {
		p("VEXTRACTF32X8 $1, Z%d, Y%d", i, tmp)
		p("VMAXPS Y%d, Y%d, Y%d", tmp, i, i)
	}
	p("VEXTRACTF128 $1, Y%d, X%d", i, tmp)
	p("VMAXPS X%d, X%d, X%d", tmp, i, i)
	p("VMOVHLPS X%d, X%d, X%d", i, tmp, tmp)
	p("VMAXPS X%d, X%d, X%d", tmp, i, i)
	p("VPSHUFD $1, X%d, X%d", i, tmp)
	p("VMAXSS X%d, X%d, X%d", tmp, i, i)
}

func header(name, sig string, frame int) {
	fmt.Fprintf(&out, "\n// func %s%s\n", name, sig)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-%d\n", name, frame)
}

// loop emits a counted loop over n (in CX, multiple of w) with body; SI, DI,
// DX are advanced by w floats when used.
func loop(s isa, name string, ptrs []string, body func()) {
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	body()
	for _, r := range ptrs {
		p("ADDQ $%d, %s", s.w*4, r)
	}
	p("SUBQ $%d, CX", s.w)
	p("JNZ %sloop", name)
	label(name + "done")
}

func bcast(s isa, src, dst string) { p("VBROADCASTSS %s, %s", src, dst) }

// capture returns the instructions f emits, one per element, instead of
// emitting them.
func capture(f func()) []string {
	saved := out
	out = bytes.Buffer{}
	f()
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	out = saved
	return lines
}

// loopU is loop with u vectors per iteration: the u bodies (body(k, off):
// vector k, at byte offset off from the pointers, in its own registers) are
// emitted interleaved instruction by instruction, so that their independent
// dependency chains sit side by side in the scheduler. A long chain (exp,
// SiLU: ~20 dependent operations) otherwise keeps only a few vectors in
// flight and runs at its latency, not at the FMA pipes' rate. The rest
// (n mod u·w) runs one vector per iteration with body(0, 0).
func loopU(s isa, name string, ptrs []string, u int, body func(k, off int)) {
	p("CMPQ CX, $%d", u*s.w)
	p("JLT %stail", name)
	label(name + "unr")
	blocks := make([][]string, u)
	for k := range blocks {
		blocks[k] = capture(func() { body(k, k*s.w*4) })
	}
	for i := 0; ; i++ {
		more := false
		for _, b := range blocks {
			if i < len(b) {
				out.WriteString(b[i] + "\n")
				more = true
			}
		}
		if !more {
			break
		}
	}
	for _, r := range ptrs {
		p("ADDQ $%d, %s", u*s.w*4, r)
	}
	p("SUBQ $%d, CX", u*s.w)
	p("CMPQ CX, $%d", u*s.w)
	p("JGE %sunr", name)
	label(name + "tail")
	loop(s, name, ptrs, func() { body(0, 0) })
}

// unroll is the number of interleaved vectors of loopU for bodies that
// need five registers each (and three shared ones).
func unroll(s isa) int {
	if s.reg == "Z" {
		return 4
	}
	return 2
}

// expScaleSum: x[i] = exp(x[i]*scale - shift); returns the sum.
func expScaleSum(s isa) {
	name := "expScaleSum" + s.suffix
	header(name, "(x *float32, n int, scale, shift float32) float32", 28)
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	bcast(s, "scale+16(FP)", s.r(8))
	bcast(s, "shift+20(FP)", s.r(9))
	expSumLoop(s, name, "SI")
	p("VMOVSS X0, ret+24(FP)")
	p("VZEROUPPER")
	p("RET")
}

// expSumLoop emits x[i] = exp(scale·x[i] − shift) over the CX floats at ptr
// (scale in register 8, shift in register 9; registers 0–4 and 10–21 (zmm)
// or 10–13 (ymm) are used) and leaves their sum in X0.
func expSumLoop(s isa, label, ptr string) {
	p("VXORPS Y0, Y0, Y0")
	if s.reg == "Z" {
		p("VPXORD Z0, Z0, Z0")
	}
	// Vector k of an unrolled step uses registers 1–4 (k = 0) or
	// 10+4(k−1)… (5–9 are the callers'); the interleaved sums still add
	// the vectors in order, so the total has the one-vector loop's bits.
	loopU(s, label, []string{ptr}, unroll(s), func(k, off int) {
		r := func(i int) string {
			if k == 0 {
				return s.r(1 + i)
			}
			return s.r(10 + 4*(k-1) + i)
		}
		p("VMOVUPS %d(%s), %s", off, ptr, r(0))
		p("VFMSUB213PS %s, %s, %s", s.r(9), s.r(8), r(0)) // v = scale*v - shift
		exp(s, r(0), r(1), r(2), r(3))
		p("VMOVUPS %s, %d(%s)", r(0), off, ptr)
		p("VADDPS %s, %s, %s", r(0), s.r(0), s.r(0))
	})
	hsum(s, 0, 1)
}

// maxLoop emits the maximum of the CX floats at ptr (CX > 0) into X(acc),
// using register tmp.
func maxLoop(s isa, label, ptr string, acc, tmp int) {
	p("VMOVUPS (%s), %s", ptr, s.r(acc))
	loop(s, label, []string{ptr}, func() {
		p("VMAXPS (%s), %s, %s", ptr, s.r(acc), s.r(acc))
	})
	hmax(s, acc, tmp)
}

// softmaxTile is one online-softmax step of flash attention over a tile of
// rows (the row-by-row Go path is onlineSoftmaxRows): per row r of s (n values, row stride lds
// floats), m' = max(m[r], scale·max(row)), row = exp(scale·row − m'),
// a = exp(m[r] − m'), l[r] = a·l[r] + Σrow, m[r] = m', and the nacc values
// of row r of acc (row stride ldacc floats) are multiplied by a. One call
// for the tile keeps the row loop and its reductions out of Go.
func softmaxTile(s isa) {
	name := "softmaxTile" + s.suffix
	header(name, "(x *float32, lds, rows, n int, scale float32, m, l, acc *float32, ldacc, nacc int)", 80)
	p("MOVQ x+0(FP), SI")
	p("MOVQ lds+8(FP), R8")
	p("SHLQ $2, R8")
	p("MOVQ rows+16(FP), R9")
	p("MOVQ n+24(FP), R10")
	bcast(s, "scale+32(FP)", s.r(8))
	p("MOVQ m+40(FP), R11")
	p("MOVQ l+48(FP), R12")
	p("MOVQ acc+56(FP), R13")
	p("MOVQ ldacc+64(FP), R14")
	p("SHLQ $2, R14")
	p("MOVQ nacc+72(FP), DX")
	p("TESTQ R9, R9")
	p("JEQ %sdone", name)
	label(name + "row")
	// Row maximum.
	p("MOVQ SI, DI")
	p("MOVQ R10, CX")
	maxLoop(s, name+"max", "DI", 5, 6)
	p("VMULSS X8, X5, X5")                 // scale·max
	p("VMAXSS (R11), X5, X5")              // m' = max(scale·max, m[r])
	p("VMOVSS (R11), X1")                  //
	p("VSUBSS X5, X1, X1")                 // m[r] − m'
	p("VMOVSS X5, (R11)")                  // m[r] = m'
	bcast(s, "X5", s.r(9))                 // shift
	bcast(s, "X1", s.r(7))                 //
	exp(s, s.r(7), s.r(2), s.r(3), s.r(4)) // a in every lane
	// Row values and their sum.
	p("MOVQ SI, DI")
	p("MOVQ R10, CX")
	expSumLoop(s, name+"exp", "DI")
	p("VMOVSS (R12), X1")
	p("VMULSS X7, X1, X1") // a·l[r]
	p("VADDSS X0, X1, X1") // + Σ
	p("VMOVSS X1, (R12)")
	// Rescale the accumulator row.
	p("MOVQ R13, DI")
	p("MOVQ DX, CX")
	loop(s, name+"acc", []string{"DI"}, func() {
		p("VMULPS (DI), %s, %s", s.r(7), s.r(1))
		p("VMOVUPS %s, (DI)", s.r(1))
	})
	p("ADDQ R8, SI")
	p("ADDQ $4, R11")
	p("ADDQ $4, R12")
	p("ADDQ R14, R13")
	p("DECQ R9")
	p("JNZ %srow", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// maxv returns the max of x[0:n].
func maxv(s isa) {
	name := "maxv" + s.suffix
	header(name, "(x *float32, n int) float32", 20)
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	maxLoop(s, name, "SI", 0, 1)
	p("VMOVSS X0, ret+16(FP)")
	p("VZEROUPPER")
	p("RET")
}

// affineAct: y = a*x + b, then SiLU when act&1; act&2 stores y with
// non-temporal stores (y aligned to a vector; a fence ends the call).
func affineAct(s isa) {
	name := "affineAct" + s.suffix
	header(name, "(x, y *float32, n int, a, b float32, act int)", 40)
	p("MOVQ x+0(FP), SI")
	p("MOVQ y+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	ra, rb, rn := s.r(s.nregs-3), s.r(s.nregs-2), s.r(s.nregs-1)
	bcast(s, "a+24(FP)", ra)
	bcast(s, "b+28(FP)", rb)
	p("VMOVUPS %s, %s", c("negone"), rn)
	p("MOVQ act+32(FP), AX")
	p("CMPQ AX, $1")
	p("JEQ %ssilu", name)
	p("CMPQ AX, $2")
	p("JEQ %splainnt", name)
	p("CMPQ AX, $3")
	p("JEQ %ssilunt", name)
	for _, v := range []struct {
		suffix  string
		act, nt bool
	}{{"plain", false, false}, {"silu", true, false}, {"plainnt", false, true}, {"silunt", true, true}} {
		if v.suffix != "plain" {
			label(name + v.suffix)
		}
		store := "VMOVUPS"
		if v.nt {
			store = "VMOVNTPS"
		}
		loopU(s, name+v.suffix+"l", []string{"SI", "DI"}, unroll(s), func(k, off int) {
			r := func(i int) string { return s.r(5*k + i) }
			p("VMOVUPS %d(SI), %s", off, r(0))
			p("VFMADD213PS %s, %s, %s", rb, ra, r(0))
			if v.act {
				sigmul(s, r(0), rn, r(1), r(2), r(3), r(4))
			}
			p("%s %s, %d(DI)", store, r(0), off)
		})
		if v.nt {
			p("SFENCE")
		}
		p("VZEROUPPER")
		p("RET")
	}
}

// packT16: the transposed B packing of AVX-512 (see packT512 in
// asm_decl_amd64.go): 16×16 blocks of rows of W, transposed in registers
// (unpack ps, unpack pd, two 128-bit lane shuffles), stored as rows of the
// nr-wide panel. With f16 the rows are float16 values widened on load.
func packT16(f16 bool) {
	name, sig, elem := "packT512", "(dst *float32, nr int, src *float32, ld, kc int)", 4
	if f16 {
		name, sig, elem = "packTH512", "(dst *float32, nr int, src *uint16, ld, kc int)", 2
	}
	header(name, sig, 40)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ nr+8(FP), R9")
	p("MOVQ src+16(FP), SI")
	p("MOVQ ld+24(FP), R8")
	p("MOVQ kc+32(FP), R10")
	p("SHRQ $4, R10") // p blocks
	p("JEQ %sdone", name)
	p("SHLQ $%d, R8", map[int]int{4: 2, 2: 1}[elem]) // ld in bytes
	p("MOVQ R9, CX")
	p("SHRQ $4, CX") // row groups
	p("JEQ %sdone", name)
	p("SHLQ $2, R9") // dst row stride in bytes
	label(name + "group")
	p("MOVQ SI, R11") // source of this p block
	p("MOVQ DI, R12") // destination of this p block
	p("MOVQ R10, DX")
	label(name + "block")
	p("MOVQ R11, AX")
	for r := 0; r < 16; r++ {
		if f16 {
			p("VCVTPH2PS (AX), Z%d", r)
		} else {
			p("VMOVUPS (AX), Z%d", r)
		}
		if r < 15 {
			p("ADDQ R8, AX")
		}
	}
	for i := 0; i < 8; i++ {
		p("VUNPCKLPS Z%d, Z%d, Z%d", 2*i+1, 2*i, 16+2*i)
		p("VUNPCKHPS Z%d, Z%d, Z%d", 2*i+1, 2*i, 16+2*i+1)
	}
	for i := 0; i < 4; i++ {
		a := func(k int) int { return 16 + 4*i + k }
		p("VUNPCKLPD Z%d, Z%d, Z%d", a(2), a(0), 4*i)
		p("VUNPCKHPD Z%d, Z%d, Z%d", a(2), a(0), 4*i+1)
		p("VUNPCKLPD Z%d, Z%d, Z%d", a(3), a(1), 4*i+2)
		p("VUNPCKHPD Z%d, Z%d, Z%d", a(3), a(1), 4*i+3)
	}
	for q := 0; q < 4; q++ {
		b := func(i int) int { return 4*i + q }
		cq := func(k int) int { return 16 + 4*q + k }
		p("VSHUFF32X4 $0x44, Z%d, Z%d, Z%d", b(1), b(0), cq(0))
		p("VSHUFF32X4 $0xEE, Z%d, Z%d, Z%d", b(1), b(0), cq(1))
		p("VSHUFF32X4 $0x44, Z%d, Z%d, Z%d", b(3), b(2), cq(2))
		p("VSHUFF32X4 $0xEE, Z%d, Z%d, Z%d", b(3), b(2), cq(3))
	}
	for q := 0; q < 4; q++ {
		cq := func(k int) int { return 16 + 4*q + k }
		p("VSHUFF32X4 $0x88, Z%d, Z%d, Z%d", cq(2), cq(0), q)
		p("VSHUFF32X4 $0xDD, Z%d, Z%d, Z%d", cq(2), cq(0), 4+q)
		p("VSHUFF32X4 $0x88, Z%d, Z%d, Z%d", cq(3), cq(1), 8+q)
		p("VSHUFF32X4 $0xDD, Z%d, Z%d, Z%d", cq(3), cq(1), 12+q)
	}
	p("MOVQ R12, BX")
	for r := 0; r < 16; r++ {
		p("VMOVUPS Z%d, (BX)", r)
		if r < 15 {
			p("ADDQ R9, BX")
		}
	}
	p("ADDQ $%d, R11", 16*elem)
	p("LEAQ (R12)(R9*8), R12")
	p("LEAQ (R12)(R9*8), R12")
	p("DECQ DX")
	p("JNZ %sblock", name)
	p("MOVQ R8, AX")
	p("SHLQ $4, AX")
	p("ADDQ AX, SI")  // next 16 rows of W
	p("ADDQ $64, DI") // next 16 columns of the panel
	p("DECQ CX")
	p("JNZ %sgroup", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// even512: dst[i] = src[2i] for n (a multiple of 16) values: two loads and
// one VPERMT2PS (indices 0, 2, …, 30 of the pair) per 16 values; the stride-2
// convolutions' phase images are built with it.
func even512() {
	header("even512", "(dst, src *float32, n int)", 24)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	p("VMOVDQU32 ·evenidx(SB), Z2")
	loop(avx512, "even512", nil, func() {
		p("VMOVUPS (SI), Z0")
		p("VPERMT2PS 64(SI), Z2, Z0")
		p("VMOVUPS Z0, (DI)")
		p("ADDQ $128, SI")
		p("ADDQ $64, DI")
	})
	p("VZEROUPPER")
	p("RET")
}

// zip512: dst[2i] = a[i], dst[2i+1] = b[i] for n (a multiple of 16) values:
// two loads and two VPERMT2PS per 32 outputs.
func zip512() {
	header("zip512", "(dst, a, b *float32, n int)", 32)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ a+8(FP), SI")
	p("MOVQ b+16(FP), DX")
	p("MOVQ n+24(FP), CX")
	p("VMOVDQU32 ·zipidx(SB), Z3")
	p("VMOVDQU32 ·zipidx+64(SB), Z4")
	loop(avx512, "zip512", nil, func() {
		p("VMOVUPS (SI), Z0")
		p("VMOVAPS Z0, Z1")
		p("VPERMT2PS (DX), Z3, Z0")
		p("VPERMT2PS (DX), Z4, Z1")
		p("VMOVUPS Z0, (DI)")
		p("VMOVUPS Z1, 64(DI)")
		p("ADDQ $64, SI")
		p("ADDQ $64, DX")
		p("ADDQ $128, DI")
	})
	p("VZEROUPPER")
	p("RET")
}

// sigMul: y = x / (1 + exp(-alpha*x)).
func sigMulFn(s isa) {
	name := "sigMul" + s.suffix
	header(name, "(x, y *float32, n int, alpha float32)", 28)
	p("MOVQ x+0(FP), SI")
	p("MOVQ y+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	rn := s.r(s.nregs - 1)
	bcast(s, "alpha+24(FP)", rn)
	p("VXORPS %s, %s, %s", c("signmask"), rn, rn)
	loopU(s, name, []string{"SI", "DI"}, unroll(s), func(k, off int) {
		r := func(i int) string { return s.r(5*k + i) }
		p("VMOVUPS %d(SI), %s", off, r(0))
		sigmul(s, r(0), rn, r(1), r(2), r(3), r(4))
		p("VMOVUPS %s, %d(DI)", r(0), off)
	})
	p("VZEROUPPER")
	p("RET")
}

// sumStats returns sum(x-shift) and sum((x-shift)^2) in float64.
func sumStats(s isa) {
	name := "sumStats" + s.suffix
	header(name, "(x *float32, n int, shift float32) (sum, sumsq float64)", 40)
	p("MOVQ x+0(FP), SI")
	p("MOVQ n+8(FP), CX")
	p("VCVTSS2SD shift+16(FP), X8, X8")
	if s.reg == "Z" {
		p("VBROADCASTSD X8, Z8")
		for i := 0; i < 4; i++ {
			p("VPXORD Z%d, Z%d, Z%d", i, i, i)
		}
	} else {
		p("VBROADCASTSD X8, Y8")
		for i := 0; i < 4; i++ {
			p("VXORPD Y%d, Y%d, Y%d", i, i, i)
		}
	}
	half := s.w / 2 * 4 // bytes of the half vector
	hreg := map[string]string{"Z": "Y", "Y": "X"}[s.reg]
	loop(s, name, []string{"SI"}, func() {
		p("VCVTPS2PD (SI), %s", s.r(4))
		p("VCVTPS2PD %d(SI), %s", half, s.r(5))
		p("VSUBPD %s, %s, %s", s.r(8), s.r(4), s.r(4))
		p("VSUBPD %s, %s, %s", s.r(8), s.r(5), s.r(5))
		p("VADDPD %s, %s, %s", s.r(4), s.r(0), s.r(0))
		p("VADDPD %s, %s, %s", s.r(5), s.r(1), s.r(1))
		p("VFMADD231PD %s, %s, %s", s.r(4), s.r(4), s.r(2))
		p("VFMADD231PD %s, %s, %s", s.r(5), s.r(5), s.r(3))
	})
	_ = hreg
	p("VADDPD %s, %s, %s", s.r(1), s.r(0), s.r(0))
	p("VADDPD %s, %s, %s", s.r(3), s.r(2), s.r(2))
	for _, i := range []int{0, 2} {
		if s.reg == "Z" {
			p("VEXTRACTF64X4 $1, Z%d, Y6", i)
			p("VADDPD Y6, Y%d, Y%d", i, i)
		}
		p("VEXTRACTF128 $1, Y%d, X6", i)
		p("VADDPD X6, X%d, X%d", i, i)
		p("VUNPCKHPD X%d, X%d, X6", i, i)
		p("VADDSD X6, X%d, X%d", i, i)
	}
	p("VMOVSD X0, sum+24(FP)")
	p("VMOVSD X2, sumsq+32(FP)")
	p("VZEROUPPER")
	p("RET")
}

// normAffine: y = (x - m)*inv*gamma + beta.
func normAffine(s isa) {
	name := "normAffine" + s.suffix
	header(name, "(x, y, gamma, beta *float32, n int, m, inv float32)", 48)
	p("MOVQ x+0(FP), SI")
	p("MOVQ y+8(FP), DI")
	p("MOVQ gamma+16(FP), DX")
	p("MOVQ beta+24(FP), BX")
	p("MOVQ n+32(FP), CX")
	bcast(s, "m+40(FP)", s.r(8))
	bcast(s, "inv+44(FP)", s.r(9))
	loop(s, name, []string{"SI", "DI", "DX", "BX"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		p("VSUBPS %s, %s, %s", s.r(8), s.r(0), s.r(0))
		p("VMULPS %s, %s, %s", s.r(9), s.r(0), s.r(0))
		p("VMOVUPS (BX), %s", s.r(1))
		p("VFMADD231PS (DX), %s, %s", s.r(0), s.r(1))
		p("VMOVUPS %s, (DI)", s.r(1))
	})
	p("VZEROUPPER")
	p("RET")
}

// binary ops: dst = a op b.
func binop(s isa, name, op string) {
	name += s.suffix
	header(name, "(dst, a, b *float32, n int)", 32)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ a+8(FP), SI")
	p("MOVQ b+16(FP), DX")
	p("MOVQ n+24(FP), CX")
	loop(s, name, []string{"SI", "DI", "DX"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		p("%s (DX), %s, %s", op, s.r(0), s.r(0))
		p("VMOVUPS %s, (DI)", s.r(0))
	})
	p("VZEROUPPER")
	p("RET")
}

// axpy: dst = a + s*b.
func axpy(s isa) {
	name := "axpy" + s.suffix
	header(name, "(dst, a *float32, s float32, b *float32, n int)", 40)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ a+8(FP), SI")
	bcast(s, "s+16(FP)", s.r(8))
	p("MOVQ b+24(FP), DX")
	p("MOVQ n+32(FP), CX")
	loop(s, name, []string{"SI", "DI", "DX"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		p("VFMADD231PS (DX), %s, %s", s.r(8), s.r(0))
		p("VMOVUPS %s, (DI)", s.r(0))
	})
	p("VZEROUPPER")
	p("RET")
}

// scaleAdd: dst = s*a + t (scalars s, t).
func scaleAdd(s isa) {
	name := "scaleAdd" + s.suffix
	header(name, "(dst, a *float32, n int, s, t float32)", 32)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ a+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	bcast(s, "s+24(FP)", s.r(8))
	bcast(s, "t+28(FP)", s.r(9))
	loop(s, name, []string{"SI", "DI"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		p("VFMADD213PS %s, %s, %s", s.r(9), s.r(8), s.r(0))
		p("VMOVUPS %s, (DI)", s.r(0))
	})
	p("VZEROUPPER")
	p("RET")
}

// ---------------------------------------------------------------- erf / GELU
//
// erf(z) for |z| < erfSplit: z*P(z^2).
// erfc(z) for erfSplit <= z < erfSplit2: exp(-z^2) * Q(z) (Q in z).
// erfc(z) for erfSplit2 <= z < erfMax: exp(-z^2)/z * R(1/z^2).
// The coefficient tables are fitted by a least-squares fit (gen_erf_table.go).

// geluCore computes v = GELU(v) (exact erf form) with temporaries t[0..7].
func geluCore(s isa, v string, t []string) {
	// t0 = |x|, t1 = z = |x|/sqrt2
	p("VANDPS %s, %s, %s", c("absmask"), v, t[0])
	p("VMULPS %s, %s, %s", c("rsqrt2"), t[0], t[1])
	// small branch: erf(z) = z*P(z^2) -> t2 ; phi_small = 0.5*(1+sign*erf)
	p("VMULPS %s, %s, %s", t[1], t[1], t[3]) // z^2
	p("VMULPS %s, %s, %s", c("esa"), t[3], t[3])
	p("VADDPS %s, %s, %s", c("esb"), t[3], t[3])
	p("VMOVUPS %s, %s", c(fmt.Sprintf("es%d", len(erfSmall)-1)), t[2])
	for i := len(erfSmall) - 2; i >= 0; i-- {
		p("VFMADD213PS %s, %s, %s", c(fmt.Sprintf("es%d", i)), t[3], t[2])
	}
	p("VMULPS %s, %s, %s", t[1], t[2], t[2]) // erf(z)
	// t2 = erf(z) with the sign of x: x*erf(|z|)... keep positive here.
	// erfc(z) = exp(-z^2) * Q, with z^2 split exactly: x^2 = h + l, z^2 = h/2 + l/2.
	p("VMULPS %s, %s, %s", t[0], t[0], t[4]) // h = x*x
	p("VMOVUPS %s, %s", t[0], t[5])
	p("VFMSUB213PS %s, %s, %s", t[4], t[0], t[5])     // l = x*x - h  (t5 = t0*t5 - t4)
	p("VMULPS %s, %s, %s", c("half"), t[4], t[4])     // h/2
	p("VXORPS %s, %s, %s", c("signmask"), t[4], t[4]) // -h/2
	exp(s, t[4], t[3], t[6], t[7])                    // e = exp(-h/2)
	p("VMULPS %s, %s, %s", c("half"), t[5], t[5])     // l/2
	p("VFNMADD231PS %s, %s, %s", t[5], t[4], t[4])    // e = e - e*l/2
	// mid: Q(z)
	p("VMULPS %s, %s, %s", c("ema"), t[1], t[3])
	p("VADDPS %s, %s, %s", c("emb"), t[3], t[3])
	p("VMOVUPS %s, %s", c(fmt.Sprintf("em%d", len(erfcMid)-1)), t[5])
	for i := len(erfcMid) - 2; i >= 0; i-- {
		p("VFMADD213PS %s, %s, %s", c(fmt.Sprintf("em%d", i)), t[3], t[5])
	}
	// big: R(1/z^2)/z
	p("VMOVUPS %s, %s", c("one"), t[6])
	p("VDIVPS %s, %s, %s", t[1], t[6], t[6]) // 1/z
	p("VMULPS %s, %s, %s", t[6], t[6], t[7]) // 1/z^2
	p("VMULPS %s, %s, %s", c("eba"), t[7], t[7])
	p("VADDPS %s, %s, %s", c("ebb"), t[7], t[7])
	p("VMOVUPS %s, %s", c(fmt.Sprintf("eb%d", len(erfcBig)-1)), t[3])
	for i := len(erfcBig) - 2; i >= 0; i-- {
		p("VFMADD213PS %s, %s, %s", c(fmt.Sprintf("eb%d", i)), t[7], t[3])
	}
	p("VMULPS %s, %s, %s", t[6], t[3], t[3]) // R/z
	// select Q or R/z: z >= split2 -> R
	if s.reg == "Z" {
		p("VCMPPS $0x1d, %s, %s, K1", c("erfsplit2"), t[1]) // z >= split2 (GE_OQ)
		p("VMOVUPS %s, K1, %s", t[3], t[5])
	} else {
		p("VCMPPS $0x1d, %s, %s, %s", c("erfsplit2"), t[1], t[6])
		p("VBLENDVPS %s, %s, %s, %s", t[6], t[3], t[5], t[5])
	}
	p("VMULPS %s, %s, %s", t[4], t[5], t[5]) // erfc(z)
	// z >= erfMax: erfc = 0
	if s.reg == "Z" {
		p("VCMPPS $0x1d, %s, %s, K2", c("erfmax"), t[1])
		p("VMOVUPS %s, K2, %s", c("zero"), t[5])
	} else {
		p("VCMPPS $0x1d, %s, %s, %s", c("erfmax"), t[1], t[6])
		p("VANDNPS %s, %s, %s", t[5], t[6], t[5]) // t5 = ~t6 & t5
	}
	// Phi(x) = 0.5*erfc(z) for x<0, 1 - 0.5*erfc(z) for x>=0 (large branch)
	// Phi(x) = 0.5 + 0.5*sign(x)*erf(z) (small branch)
	p("VMULPS %s, %s, %s", c("half"), t[5], t[5])  // 0.5*erfc
	p("VMULPS %s, %s, %s", c("half"), t[2], t[2])  // 0.5*erf
	p("VANDPS %s, %s, %s", c("signmask"), v, t[6]) // sign of x
	p("VXORPS %s, %s, %s", t[6], t[2], t[2])       // 0.5*sign*erf
	p("VADDPS %s, %s, %s", c("half"), t[2], t[2])  // small Phi
	p("VMOVUPS %s, %s", c("one"), t[7])            //
	p("VSUBPS %s, %s, %s", t[5], t[7], t[7])       // 1-0.5erfc
	if s.reg == "Z" {
		p("VCMPPS $0x01, %s, %s, K3", c("zero"), v) // x < 0
		p("VMOVUPS %s, K3, %s", t[5], t[7])
		p("VCMPPS $0x1d, %s, %s, K4", c("erfsplit"), t[1]) // z >= split: large
		p("VMOVUPS %s, K4, %s", t[7], t[2])
	} else {
		p("VCMPPS $0x01, %s, %s, %s", c("zero"), v, t[6])
		p("VBLENDVPS %s, %s, %s, %s", t[6], t[5], t[7], t[7])
		p("VCMPPS $0x1d, %s, %s, %s", c("erfsplit"), t[1], t[6])
		p("VBLENDVPS %s, %s, %s, %s", t[6], t[7], t[2], t[2])
	}
	p("VMULPS %s, %s, %s", t[2], v, v)
}

func gelu(s isa) {
	name := "gelu" + s.suffix
	header(name, "(x, y *float32, n int)", 24)
	p("MOVQ x+0(FP), SI")
	p("MOVQ y+8(FP), DI")
	p("MOVQ n+16(FP), CX")
	t := []string{s.r(1), s.r(2), s.r(3), s.r(4), s.r(5), s.r(6), s.r(7), s.r(8)}
	loop(s, name, []string{"SI", "DI"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		geluCore(s, s.r(0), t)
		p("VMOVUPS %s, (DI)", s.r(0))
	})
	p("VZEROUPPER")
	p("RET")
}

// geglu: y = a * GELU(g).
func geglu(s isa) {
	name := "geglu" + s.suffix
	header(name, "(a, gate, y *float32, n int)", 32)
	p("MOVQ a+0(FP), DX")
	p("MOVQ gate+8(FP), SI")
	p("MOVQ y+16(FP), DI")
	p("MOVQ n+24(FP), CX")
	t := []string{s.r(1), s.r(2), s.r(3), s.r(4), s.r(5), s.r(6), s.r(7), s.r(8)}
	loop(s, name, []string{"SI", "DI", "DX"}, func() {
		p("VMOVUPS (SI), %s", s.r(0))
		geluCore(s, s.r(0), t)
		p("VMULPS (DX), %s, %s", s.r(0), s.r(0))
		p("VMOVUPS %s, (DI)", s.r(0))
	})
	p("VZEROUPPER")
	p("RET")
}

// widenF16: dst[i] = float32(src[i]) for float16 src (VCVTPH2PS; F16C on
// AVX2 machines), n a multiple of w. With prefetch (widenF16PF) it also
// prefetches the same span at src+pf bytes (the next panel's row), so that
// widening a panel read straight from memory does not wait on it.
func widenF16(s isa, prefetch bool) {
	name, sig, frame := "widenF16"+s.suffix, "(dst *float32, src *uint16, n int)", 24
	if prefetch {
		name, sig, frame = "widenF16PF"+s.suffix, "(dst *float32, src *uint16, n int, pf int)", 32
	}
	header(name, sig, frame)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	if prefetch {
		p("MOVQ pf+24(FP), DX")
	}
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	if prefetch {
		p("PREFETCHT0 (SI)(DX*1)")
	}
	p("VCVTPH2PS (SI), %s", s.r(0))
	p("VMOVUPS %s, (DI)", s.r(0))
	p("ADDQ $%d, SI", s.w*2)
	p("ADDQ $%d, DI", s.w*4)
	p("SUBQ $%d, CX", s.w)
	p("JNZ %sloop", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// fmaLoop runs n iterations of 12 independent register-only FMAs (the
// machine's peak-FLOP probe).
func fmaLoop(s isa) {
	name := "fmaLoop" + s.suffix
	header(name, "(n int)", 8)
	p("MOVQ n+0(FP), CX")
	for i := 0; i < 14; i++ {
		p("VXORPS %s, %s, %s", y(i), y(i), y(i))
	}
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	for i := 0; i < 12; i++ {
		p("VFMADD231PS %s, %s, %s", s.r(12), s.r(13), s.r(i))
	}
	p("DECQ CX")
	p("JNZ %sloop", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// prefetchRows issues PREFETCHT0 for lines cache lines from each of rows
// rows starting at p, stride floats apart (the next A panel of a GEMM).
func prefetchRows() {
	name := "prefetchRows"
	header(name, "(p *float32, stride, rows, lines int)", 32)
	p("MOVQ p+0(FP), SI")
	p("MOVQ stride+8(FP), R8")
	p("SHLQ $2, R8")
	p("MOVQ rows+16(FP), CX")
	p("MOVQ lines+24(FP), DX")
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	p("TESTQ DX, DX")
	p("JEQ %sdone", name)
	label(name + "row")
	p("MOVQ SI, AX")
	p("MOVQ DX, BX")
	label(name + "line")
	p("PREFETCHT0 (AX)")
	p("ADDQ $64, AX")
	p("DECQ BX")
	p("JNZ %sline", name)
	p("ADDQ R8, SI")
	p("DECQ CX")
	p("JNZ %srow", name)
	label(name + "done")
	p("RET")
}

func main() {
	fmt.Fprintf(&out, "// Code generated by gen_asm.go; DO NOT EDIT.\n\n//go:build !noasm\n\n#include \"textflag.h\"\n")
	gemmKernel(avx512, 14, 2, false)
	gemmKernel(avx512, 14, 2, true)
	gemmKernel(avx512, 8, 3, false)
	gemmKernel(avx512, 8, 3, true)
	gemmKernel(avx512, 12, 2, false)
	gemmKernel(avx512, 12, 2, true)
	gemmKernel(avx2, 6, 2, false)
	gemmKernel(avx2, 6, 2, true)
	gemmKernelI(avx512, 14, 2)
	gemmKernelI(avx512, 12, 2)
	gemmKernelI(avx512, 8, 3)
	gemmKernelI(avx2, 6, 2)
	packRows(avx512, 2)
	packRows(avx512, 3)
	packRows(avx2, 2)
	prefetchRows()
	packT16(false)
	packT16(true)
	even512()
	zip512()
	for _, s := range []isa{avx512, avx2} {
		expScaleSum(s)
		softmaxTile(s)
		maxv(s)
		affineAct(s)
		sigMulFn(s)
		sumStats(s)
		normAffine(s)
		binop(s, "addv", "VADDPS")
		binop(s, "mulv", "VMULPS")
		axpy(s)
		scaleAdd(s)
		gelu(s)
		geglu(s)
		fmaLoop(s)
		widenF16(s, false)
		widenF16(s, true)
	}
	out.WriteString("\n")
	for i, b := range constBits {
		for j := 0; j < 16; j++ {
			fmt.Fprintf(&out, "DATA ·kconst+%d(SB)/4, $0x%08x\n", i*64+j*4, b)
		}
	}
	fmt.Fprintf(&out, "GLOBL ·kconst(SB), RODATA|NOPTR, $%d\n", len(constBits)*64)
	for i := 0; i < 16; i++ {
		fmt.Fprintf(&out, "DATA ·evenidx+%d(SB)/4, $%d\n", i*4, 2*i)
	}
	fmt.Fprintf(&out, "GLOBL ·evenidx(SB), RODATA|NOPTR, $64\n")
	for i := 0; i < 32; i++ {
		fmt.Fprintf(&out, "DATA ·zipidx+%d(SB)/4, $%d\n", i*4, i/2+16*(i%2))
	}
	fmt.Fprintf(&out, "GLOBL ·zipidx(SB), RODATA|NOPTR, $128\n")
	src := strings.ReplaceAll(out.String(), "\t\n", "\n")
	if err := os.WriteFile("kernels_amd64.s", []byte(src), 0o644); err != nil {
		panic(err)
	}
}
