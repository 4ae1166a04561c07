//go:build !noasm

package kernels

import "golang.org/x/sys/cpu"

func init() {
	x := cpu.X86
	if x.HasAVX2 && x.HasFMA {
		detected = AVX2
		gemmArchs[AVX2] = []*gemmArch{{name: "avx2-6x16", mr: 6, nr: 16, kp: gemm256p6x16, ks: gemm256s6x16, ki: gemm256i6x16, pack: packRows256_16}}
		vecTables[AVX2] = &vecOps{w: 8, expScaleSum: expScaleSum256, softmaxTile: softmaxTile256, maxv: maxv256, affineAct: affineAct256,
			sigMul: sigMul256, sumStats: sumStats256, normAffine: normAffine256, addv: addv256, mulv: mulv256,
			axpy: axpy256, scaleAdd: scaleAdd256, gelu: gelu256, geglu: geglu256, fmaLoop: fmaLoop256, widenF16: widenF16256, widenF16PF: widenF16PF256, prefetch: prefetchRows}
	}
	if detected == AVX2 && x.HasAVX512F && x.HasAVX512DQ && x.HasAVX512BW && x.HasAVX512VL {
		detected = AVX512
		gemmArchs[AVX512] = []*gemmArch{
			{name: "avx512-14x32", mr: 14, nr: 32, kp: gemm512p14x32, ks: gemm512s14x32, ki: gemm512i14x32, pack: packRows512_32},
			{name: "avx512-8x48", mr: 8, nr: 48, kp: gemm512p8x48, ks: gemm512s8x48, ki: gemm512i8x48, pack: packRows512_48},
			{name: "avx512-12x32", mr: 12, nr: 32, kp: gemm512p12x32, ks: gemm512s12x32, ki: gemm512i12x32, pack: packRows512_32},
		}
		vecTables[AVX512] = &vecOps{w: 16, expScaleSum: expScaleSum512, softmaxTile: softmaxTile512, maxv: maxv512, affineAct: affineAct512,
			sigMul: sigMul512, sumStats: sumStats512, normAffine: normAffine512, addv: addv512, mulv: mulv512,
			axpy: axpy512, scaleAdd: scaleAdd512, gelu: gelu512, geglu: geglu512, fmaLoop: fmaLoop512, widenF16: widenF16512, widenF16PF: widenF16PF512, prefetch: prefetchRows,
			packT: packT512, packTH: packTH512, even: even512, zip: zip512}
	}
	current.Store(int32(detected))
}
