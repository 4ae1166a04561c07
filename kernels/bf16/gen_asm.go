//go:build ignore

// gen_asm writes bf16_amd64.s: the AVX-512 BF16 GEMM micro-kernels and the
// packing loops. Run it with `go generate ./kernels/bf16`.
//
// The Go assembler does not know VDPBF16PS and VCVTNE2PS2BF16, so evex()
// encodes them as raw bytes (EVEX prefix, opcode, ModRM, SIB, disp8).
// `go run gen_asm.go -table` prints the encodings of a table of such
// instructions (every register field from 0 to 31, every addressing form the
// kernels use) in Intel syntax next to their bytes; assembling the Intel
// column with `gcc -c` and reading it back with `objdump -d` gave exactly the
// same bytes for all 63 rows (checked when the kernels were written). The
// numerical tests then exercise every emitted instruction.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
)

var out bytes.Buffer

func p(format string, args ...any) { fmt.Fprintf(&out, "\t"+format+"\n", args...) }
func label(s string)               { fmt.Fprintf(&out, "%s:\n", s) }

// General-purpose register numbers as the hardware encodes them.
var gpr = map[string]int{"AX": 0, "CX": 1, "DX": 2, "BX": 3, "SP": 4, "BP": 5, "SI": 6, "DI": 7,
	"R8": 8, "R9": 9, "R10": 10, "R11": 11, "R12": 12, "R13": 13, "R14": 14, "R15": 15}

// mem is a memory operand base + index*scale + disp (index "" for none).
type mem struct {
	base, index string
	scale, disp int
}

// evexBytes encodes a 512-bit EVEX instruction of map 0F38, W0:
// op zmm(dst), zmm(src1 = vvvv), src2 where src2 is either zmm register
// rm (m == nil) or the memory operand m, with a 32-bit embedded broadcast
// when bcst is set. pp selects the implied prefix (1: 66, 2: F3, 3: F2).
func evexBytes(opcode byte, pp int, dst, src1, rm int, m *mem, bcst bool) []byte {
	inv := func(b int) int { return 1 - b&1 }
	var x, b int // extension bits of the r/m side
	if m == nil {
		b = rm >> 3 & 1
		x = rm >> 4 & 1
	} else {
		b = gpr[m.base] >> 3 & 1
		if m.index != "" {
			x = gpr[m.index] >> 3 & 1
		}
	}
	p0 := inv(dst>>3)<<7 | inv(x)<<6 | inv(b)<<5 | inv(dst>>4)<<4 | 0b10
	p1 := 0<<7 | (^src1&15)<<3 | 1<<2 | pp
	bb := 0
	if bcst {
		bb = 1
	}
	p2 := 0<<7 | 0b10<<5 | bb<<4 | inv(src1>>4)<<3
	enc := []byte{0x62, byte(p0), byte(p1), byte(p2), opcode}
	if m == nil {
		return append(enc, byte(0b11<<6|(dst&7)<<3|rm&7))
	}
	n := 64 // disp8 scale: the memory operand size
	if bcst {
		n = 4
	}
	base := gpr[m.base]
	mod := 0
	if m.disp != 0 || base&7 == 5 {
		if m.disp%n != 0 || m.disp/n < -128 || m.disp/n > 127 {
			panic(fmt.Sprintf("displacement %d not encodable as disp8*%d", m.disp, n))
		}
		mod = 1
	}
	if m.index == "" && base&7 != 4 {
		enc = append(enc, byte(mod<<6|(dst&7)<<3|base&7))
	} else {
		ss := map[int]int{1: 0, 2: 1, 4: 2, 8: 3}[m.scale]
		idx := 4 // none
		if m.index != "" {
			idx = gpr[m.index] & 7
			if m.index == "SP" {
				panic("SP cannot be an index")
			}
		}
		enc = append(enc, byte(mod<<6|(dst&7)<<3|4), byte(ss<<6|idx<<3|base&7))
	}
	if mod == 1 {
		enc = append(enc, byte(int8(m.disp/n)))
	}
	return enc
}

// emit writes raw bytes with the instruction as a comment.
func emit(enc []byte, comment string) {
	var s []string
	for _, b := range enc {
		s = append(s, fmt.Sprintf("BYTE $0x%02x", b))
	}
	p("%s // %s", strings.Join(s, "; "), comment)
}

// vdpbf16psBcst: zmm(acc) += pairwise dot(zmm(b), broadcast dword [m]).
func vdpbf16psBcst(acc, b int, m mem) {
	desc := fmt.Sprintf("(%s)", m.base)
	if m.index != "" {
		desc = fmt.Sprintf("(%s)(%s*%d)", m.base, m.index, m.scale)
	}
	emit(evexBytes(0x52, 2, acc, b, 0, &m, true), fmt.Sprintf("VDPBF16PS.BCST %d%s, Z%d, Z%d", m.disp, desc, b, acc))
}

// vcvtne2ps2bf16: zmm(dst) words 0..15 = bf16(zmm(lo)), 16..31 = bf16(zmm(hi)).
func vcvtne2ps2bf16(dst, hi, lo int) {
	emit(evexBytes(0x72, 3, dst, hi, lo, nil, false), fmt.Sprintf("VCVTNE2PS2BF16 Z%d, Z%d, Z%d", lo, hi, dst))
}

// encodingTable prints, for `go run gen_asm.go -table`, instructions in
// Intel syntax with the bytes evexBytes gives them, to compare with GNU as.
func encodingTable() {
	type row struct {
		intel string
		enc   []byte
	}
	var rows []row
	add := func(intel string, enc []byte) { rows = append(rows, row{intel, enc}) }
	for _, r := range [][2]int{{0, 28}, {27, 29}, {9, 31}, {16, 30}, {15, 8}, {31, 0}, {7, 23}} {
		for _, m := range []mem{{base: "SI"}, {base: "SI", disp: 52}, {base: "R10", index: "R11", scale: 2},
			{base: "BX", index: "R14", scale: 1}, {base: "SI", index: "R12", scale: 1}, {base: "R10", index: "R11", scale: 4},
			{base: "R10"}, {base: "BX", index: "R13", scale: 1}} {
			in := fmt.Sprintf("vdpbf16ps zmm%d, zmm%d, dword ptr [%s", r[0], r[1], strings.ToLower(intelReg(m.base)))
			if m.index != "" {
				in += fmt.Sprintf("+%s*%d", strings.ToLower(intelReg(m.index)), m.scale)
			}
			if m.disp != 0 {
				in += fmt.Sprintf("+%d", m.disp)
			}
			in += "]{1to16}"
			add(in, evexBytes(0x52, 2, r[0], r[1], 0, &m, true))
		}
		add(fmt.Sprintf("vcvtne2ps2bf16 zmm%d, zmm%d, zmm%d", r[0], r[1], (r[0]+r[1])%32),
			evexBytes(0x72, 3, r[0], r[1], (r[0]+r[1])%32, nil, false))
	}
	for _, r := range rows {
		var h []string
		for _, b := range r.enc {
			h = append(h, fmt.Sprintf("%02x", b))
		}
		fmt.Printf("\t{%q, %q},\n", r.intel, strings.Join(h, " "))
	}
}

func intelReg(g string) string {
	m := map[string]string{"AX": "rax", "CX": "rcx", "DX": "rdx", "BX": "rbx", "SP": "rsp", "BP": "rbp", "SI": "rsi", "DI": "rdi"}
	if s, ok := m[g]; ok {
		return s
	}
	return strings.ToLower(g)
}

// ---------------------------------------------------------------- GEMM

// gemmKernel emits C[mr×nv*16] (+)= A·B over kp pairs of k. Packed A is
// [kp][mr] dwords (a bf16 pair each); strided A is mr rows of lda dwords.
// Packed B is [kp][nv*16] dwords. flags bit 0: add C. rbias (per row) and
// cbias (per column) are added when not nil.
func gemmKernel(mr, nv int, strided bool) {
	name := fmt.Sprintf("dpbf16%s%dx%d", map[bool]string{false: "p", true: "s"}[strided], mr, nv*16)
	nacc := mr * nv
	if nacc+nv > 32 {
		panic("too many registers for " + name)
	}
	bReg := func(j int) int { return nacc + j }
	acc := func(i, j int) int { return i*nv + j }
	z := func(i int) string { return fmt.Sprintf("Z%d", i) }
	fmt.Fprintf(&out, "\n// func %s(kp int, a *uint32, lda int, b *uint32, c *float32, ldc int, flags int, rbias, cbias *float32)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-72\n", name)
	p("MOVQ kp+0(FP), CX")
	p("MOVQ a+8(FP), SI")
	p("MOVQ lda+16(FP), R11")
	p("SHLQ $2, R11")
	p("MOVQ b+24(FP), DI")
	p("MOVQ c+32(FP), DX")
	p("MOVQ ldc+40(FP), R8")
	p("SHLQ $2, R8")
	if strided {
		p("LEAQ (R11)(R11*2), R12") // 3
		p("LEAQ (R11)(R11*4), R13") // 5
		p("LEAQ (R12)(R12*1), R14") // 6
		p("LEAQ (R14)(R11*1), AX")  // 7
		p("LEAQ (SI)(AX*1), R10")   // row 7
		p("LEAQ (R10)(AX*1), BX")   // row 14
	}
	p("MOVQ DX, AX")
	for i := 0; i < mr; i++ {
		for j := 0; j <= nv*64/64; j++ {
			p("PREFETCHT0 %d(AX)", j*64)
		}
		if i < mr-1 {
			p("ADDQ R8, AX")
		}
	}
	for i := 0; i < nacc; i++ {
		p("VPXORD %s, %s, %s", z(i), z(i), z(i))
	}
	lp := name + "loop"
	st := name + "store"
	p("TESTQ CX, CX")
	p("JEQ %s", st)
	label(lp)
	for j := 0; j < nv; j++ {
		p("VMOVDQU32 %d(DI), %s", j*64, z(bReg(j)))
	}
	for i := 0; i < mr; i++ {
		var m mem
		if !strided {
			m = mem{base: "SI", disp: i * 4}
		} else {
			base := []string{"SI", "R10", "BX"}[i/7]
			m = []mem{{base: base}, {base: base, index: "R11", scale: 1}, {base: base, index: "R11", scale: 2},
				{base: base, index: "R12", scale: 1}, {base: base, index: "R11", scale: 4},
				{base: base, index: "R13", scale: 1}, {base: base, index: "R14", scale: 1}}[i%7]
		}
		for j := 0; j < nv; j++ {
			vdpbf16psBcst(acc(i, j), bReg(j), m)
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
	p("ADDQ $%d, DI", nv*64)
	p("DECQ CX")
	p("JNZ %s", lp)
	label(st)
	// Row bias: bias[i] added to every column of row i.
	p("MOVQ rbias+56(FP), BX")
	p("TESTQ BX, BX")
	p("JEQ %snorbias", st)
	for i := 0; i < mr; i++ {
		p("VBROADCASTSS %d(BX), %s", i*4, z(bReg(0)))
		for j := 0; j < nv; j++ {
			p("VADDPS %s, %s, %s", z(bReg(0)), z(acc(i, j)), z(acc(i, j)))
		}
	}
	label(st + "norbias")
	// Column bias: bias[j] added to every row.
	p("MOVQ cbias+64(FP), BX")
	p("TESTQ BX, BX")
	p("JEQ %snocbias", st)
	for j := 0; j < nv; j++ {
		p("VMOVUPS %d(BX), %s", j*64, z(bReg(j)))
	}
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("VADDPS %s, %s, %s", z(bReg(j)), z(acc(i, j)), z(acc(i, j)))
		}
	}
	label(st + "nocbias")
	p("MOVQ flags+48(FP), R9")
	p("TESTQ $1, R9")
	p("JEQ %sonly", st)
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("VADDPS %d(DX), %s, %s", j*64, z(acc(i, j)), z(acc(i, j)))
			p("VMOVUPS %s, %d(DX)", z(acc(i, j)), j*64)
		}
		p("ADDQ R8, DX")
	}
	p("VZEROUPPER")
	p("RET")
	label(st + "only")
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("VMOVUPS %s, %d(DX)", z(acc(i, j)), j*64)
		}
		p("ADDQ R8, DX")
	}
	p("VZEROUPPER")
	p("RET")
}

// ---------------------------------------------------------------- packing

// packPairs emits packPairs<nr>(dst *uint32, src *uint16, offs *int, kp int):
// for p < kp and j < nr, dst[p*nr+j] = src[offs[2p]+j] | src[offs[2p+1]+j]<<16
// (offsets in bf16 elements), i.e. the two bf16 rows of k-pair p interleaved.
// The interleave is a VPERMI2W with the index tables ·ilv (words
// 0,32,1,33,...,15,47 then 16,48,...,31,63).
func packPairs(nv int) {
	nr := nv * 32
	name := fmt.Sprintf("packPairs%d", nr)
	fmt.Fprintf(&out, "\n// func %s(dst *uint32, src *uint16, offs *int, kp int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-32\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ offs+16(FP), BX")
	p("MOVQ kp+24(FP), CX")
	p("VMOVDQU64 ·ilv+0(SB), Z30")
	p("VMOVDQU64 ·ilv+64(SB), Z31")
	p("TESTQ CX, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	p("MOVQ (BX), AX")
	p("MOVQ 8(BX), DX")
	for v := 0; v < nv; v++ {
		r0, r1 := 4*v, 4*v+1
		p("VMOVDQU16 %d(SI)(AX*2), Z%d", v*64, r0)
		p("VMOVDQU16 %d(SI)(DX*2), Z%d", v*64, r1)
		p("VMOVDQU64 Z30, Z%d", r0+2)
		p("VMOVDQU64 Z31, Z%d", r0+3)
		p("VPERMI2W Z%d, Z%d, Z%d", r1, r0, r0+2)
		p("VPERMI2W Z%d, Z%d, Z%d", r1, r0, r0+3)
		p("VMOVDQU32 Z%d, %d(DI)", r0+2, v*128)
		p("VMOVDQU32 Z%d, %d(DI)", r0+3, v*128+64)
	}
	p("ADDQ $16, BX")
	p("ADDQ $%d, DI", nr*4)
	p("DECQ CX")
	p("JNZ %sloop", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// cvtRow emits cvtRow(dst *uint16, src *float32, n int): dst[i] =
// bf16(src[i]) rounded to nearest even, for n a multiple of 32.
func cvtRow() {
	name := "cvtRow"
	fmt.Fprintf(&out, "\n// func %s(dst *uint16, src *float32, n int)\n", name)
	fmt.Fprintf(&out, "TEXT ·%s(SB), NOSPLIT, $0-24\n", name)
	p("MOVQ dst+0(FP), DI")
	p("MOVQ src+8(FP), SI")
	p("MOVQ n+16(FP), CX")
	p("SHRQ $5, CX")
	p("JEQ %sdone", name)
	label(name + "loop")
	p("VMOVUPS 0(SI), Z0")
	p("VMOVUPS 64(SI), Z1")
	vcvtne2ps2bf16(2, 1, 0)
	p("VMOVDQU16 Z2, 0(DI)")
	p("ADDQ $128, SI")
	p("ADDQ $64, DI")
	p("DECQ CX")
	p("JNZ %sloop", name)
	label(name + "done")
	p("VZEROUPPER")
	p("RET")
}

// Tiles: mr×nr with nr = 32 or 64.
var tiles = [][2]int{{14, 2}, {12, 2}, {8, 2}, {4, 2}, {6, 4}, {4, 4}}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-table" {
		encodingTable()
		return
	}
	out.WriteString("// Code generated by gen_asm.go; DO NOT EDIT.\n\n//go:build !noasm\n\n#include \"textflag.h\"\n")
	// Interleave tables for VPERMI2W (words).
	for t := 0; t < 2; t++ {
		for i := 0; i < 16; i++ {
			lo, hi := 16*t+i, 32+16*t+i
			fmt.Fprintf(&out, "DATA ·ilv+%d(SB)/4, $0x%04x%04x\n", t*64+i*4, hi, lo)
		}
	}
	out.WriteString("GLOBL ·ilv(SB), RODATA|NOPTR, $128\n")
	for _, t := range tiles {
		gemmKernel(t[0], t[1], false)
		gemmKernel(t[0], t[1], true)
	}
	packPairs(1)
	packPairs(2)
	cvtRow()
	if err := os.WriteFile("bf16_amd64.s", out.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
