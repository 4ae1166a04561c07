// Code generated from kernels_amd64.s signatures; keep in sync with gen_asm.go.

//go:build !noasm

package kernels

// gemm512p14x32 computes, for i < 14, j < 32, with A(i,p) = a[p*14+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*32+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm512p14x32(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512s14x32 computes, for i < 14, j < 32, with A(i,p) = a[p*14+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*32+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm512s14x32(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512p8x48 computes, for i < 8, j < 48, with A(i,p) = a[p*8+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*48+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm512p8x48(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512s8x48 computes, for i < 8, j < 48, with A(i,p) = a[p*8+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*48+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm512s8x48(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512p12x32 computes, for i < 12, j < 32, with A(i,p) = a[p*12+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*32+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm512p12x32(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512s12x32 is gemm512p12x32 with A strided (A(i,p) = a[i*lda+p]).
//
//go:noescape
func gemm512s12x32(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm256p6x16 computes, for i < 6, j < 16, with A(i,p) = a[p*6+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*16+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm256p6x16(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm256s6x16 computes, for i < 6, j < 16, with A(i,p) = a[p*6+i] (packed) or a[i*lda+p] (strided)
// and B(p,j) = b[p*16+j]:
//
//	s := sum_{p<k} A(i,p)*B(p,j) (+ bias[i] when bias != nil)
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
//go:noescape
func gemm256s6x16(k int, a *float32, lda int, b, c *float32, ldc int, acc int, bias *float32)

// gemm512i14x32 computes, for i < 14, j < 32, with A(i,p) = a[i*lda+p]
// (strided) and an indirect B, B(p,j) = b[offs[p]+j] (offs in floats: each
// row of B is read in place, e.g. the implicit im2col of a padded image):
//
//	var s float32
//	for p := 0; p < k; p++ {
//		s = fma(A(i,p), B(p,j), s) // in order, one rounding per step
//	}
//	if bias != nil { s += bias[i] }
//	if acc != 0 { c[i*ldc+j] += s } else { c[i*ldc+j] = s }
//
// This is gemm512s14x32's arithmetic: on the same A and B values the results
// are bit for bit those of the packed-B kernel. When pf != nil, step p also
// prefetches pf[offs[p] : offs[p]+32] (the next panel's row; it is not read).
//
//go:noescape
func gemm512i14x32(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)

// gemm512i12x32 is gemm512i14x32 for a 12×32 tile (gemm512s12x32 with
// B(p,j) = b[offs[p]+j]).
//
//go:noescape
func gemm512i12x32(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)

// gemm512i8x48 is gemm512i14x32 for an 8×48 tile (gemm512s8x48 with
// B(p,j) = b[offs[p]+j]).
//
//go:noescape
func gemm512i8x48(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)

// gemm256i6x16 is gemm512i14x32 for the AVX2 6×16 tile (gemm256s6x16 with
// B(p,j) = b[offs[p]+j]).
//
//go:noescape
func gemm256i6x16(k int, a *float32, lda int, b *float32, offs *int, c *float32, ldc int, acc int, bias, pf *float32)

// packRows512_32 copies, for p < k, dst[p*32 : (p+1)*32] = src[offs[p] : offs[p]+32].
//
//go:noescape
func packRows512_32(dst, src *float32, offs *int, k int)

// packRows512_48 copies, for p < k, dst[p*48 : (p+1)*48] = src[offs[p] : offs[p]+48].
//
//go:noescape
func packRows512_48(dst, src *float32, offs *int, k int)

// packRows256_16 copies, for p < k, dst[p*16 : (p+1)*16] = src[offs[p] : offs[p]+16].
//
//go:noescape
func packRows256_16(dst, src *float32, offs *int, k int)

// expScaleSum512 sets x[i] = exp(x[i]*scale - shift) for i < n (n a multiple of the lane count) and returns the sum.
//
//go:noescape
func expScaleSum512(x *float32, n int, scale, shift float32) float32

// softmaxTile512 runs one online-softmax step over rows rows of x (n values
// each, a multiple of the lane count; row stride lds floats): for row r, with
// m' = max(m[r], scale*max(row)) and a = exp(m[r]-m'), it sets
// row[j] = exp(scale*row[j]-m'), l[r] = a*l[r] + sum(row), m[r] = m', and
// acc[r*ldacc+j] *= a for j < nacc (a multiple of the lane count).
//
//go:noescape
func softmaxTile512(x *float32, lds, rows, n int, scale float32, m, l, acc *float32, ldacc, nacc int)

// maxv512 returns max(x[0:n]) (n > 0, a multiple of the lane count).
//
//go:noescape
func maxv512(x *float32, n int) float32

// affineAct512 sets y[i] = a*x[i] + b, then y[i] = y[i]/(1+exp(-y[i])) when
// act&1; when act&2 it writes y with non-temporal stores (y aligned to a
// vector) and ends with SFENCE.
//
//	for i < n: v := a*x[i] + b; if act&1 != 0 { v = v / (1 + exp(-v)) }; y[i] = v
//
//go:noescape
func affineAct512(x, y *float32, n int, a, b float32, act int)

// sigMul512 sets y[i] = x[i] / (1 + exp(-alpha*x[i])).
//
//go:noescape
func sigMul512(x, y *float32, n int, alpha float32)

// sumStats512 returns sum(x[i]-shift) and sum((x[i]-shift)^2), accumulated in float64.
//
//go:noescape
func sumStats512(x *float32, n int, shift float32) (sum, sumsq float64)

// normAffine512 sets y[i] = (x[i]-m)*inv*gamma[i] + beta[i].
//
//go:noescape
func normAffine512(x, y, gamma, beta *float32, n int, m, inv float32)

// addv512 sets dst[i] = a[i] + b[i].
//
//go:noescape
func addv512(dst, a, b *float32, n int)

// mulv512 sets dst[i] = a[i] * b[i].
//
//go:noescape
func mulv512(dst, a, b *float32, n int)

// axpy512 sets dst[i] = a[i] + s*b[i].
//
//go:noescape
func axpy512(dst, a *float32, s float32, b *float32, n int)

// scaleAdd512 sets dst[i] = s*a[i] + t.
//
//go:noescape
func scaleAdd512(dst, a *float32, n int, s, t float32)

// gelu512 sets y[i] = x[i]/2 * (1 + erf(x[i]/√2)).
//
//go:noescape
func gelu512(x, y *float32, n int)

// geglu512 sets y[i] = a[i] * x/2*(1+erf(x/√2)) with x = g[i].
//
//go:noescape
func geglu512(a, gate, y *float32, n int)

// fmaLoop512 runs n iterations of 12 independent register-only FMAs (the peak probe).
//
//go:noescape
func fmaLoop512(n int)

// expScaleSum256 sets x[i] = exp(x[i]*scale - shift) for i < n (n a multiple of the lane count) and returns the sum.
//
//go:noescape
func expScaleSum256(x *float32, n int, scale, shift float32) float32

// softmaxTile256 runs one online-softmax step over rows rows of x (n values
// each, a multiple of the lane count; row stride lds floats): for row r, with
// m' = max(m[r], scale*max(row)) and a = exp(m[r]-m'), it sets
// row[j] = exp(scale*row[j]-m'), l[r] = a*l[r] + sum(row), m[r] = m', and
// acc[r*ldacc+j] *= a for j < nacc (a multiple of the lane count).
//
//go:noescape
func softmaxTile256(x *float32, lds, rows, n int, scale float32, m, l, acc *float32, ldacc, nacc int)

// maxv256 returns max(x[0:n]) (n > 0, a multiple of the lane count).
//
//go:noescape
func maxv256(x *float32, n int) float32

// affineAct256 sets y[i] = a*x[i] + b, then y[i] = y[i]/(1+exp(-y[i])) when
// act&1; when act&2 it writes y with non-temporal stores (y aligned to a
// vector) and ends with SFENCE.
//
//	for i < n: v := a*x[i] + b; if act&1 != 0 { v = v / (1 + exp(-v)) }; y[i] = v
//
//go:noescape
func affineAct256(x, y *float32, n int, a, b float32, act int)

// sigMul256 sets y[i] = x[i] / (1 + exp(-alpha*x[i])).
//
//go:noescape
func sigMul256(x, y *float32, n int, alpha float32)

// sumStats256 returns sum(x[i]-shift) and sum((x[i]-shift)^2), accumulated in float64.
//
//go:noescape
func sumStats256(x *float32, n int, shift float32) (sum, sumsq float64)

// normAffine256 sets y[i] = (x[i]-m)*inv*gamma[i] + beta[i].
//
//go:noescape
func normAffine256(x, y, gamma, beta *float32, n int, m, inv float32)

// addv256 sets dst[i] = a[i] + b[i].
//
//go:noescape
func addv256(dst, a, b *float32, n int)

// mulv256 sets dst[i] = a[i] * b[i].
//
//go:noescape
func mulv256(dst, a, b *float32, n int)

// axpy256 sets dst[i] = a[i] + s*b[i].
//
//go:noescape
func axpy256(dst, a *float32, s float32, b *float32, n int)

// scaleAdd256 sets dst[i] = s*a[i] + t.
//
//go:noescape
func scaleAdd256(dst, a *float32, n int, s, t float32)

// gelu256 sets y[i] = x[i]/2 * (1 + erf(x[i]/√2)).
//
//go:noescape
func gelu256(x, y *float32, n int)

// geglu256 sets y[i] = a[i] * x/2*(1+erf(x/√2)) with x = g[i].
//
//go:noescape
func geglu256(a, gate, y *float32, n int)

// fmaLoop256 runs n iterations of 12 independent register-only FMAs (the peak probe).
//
//go:noescape
func fmaLoop256(n int)

// widenF16512 converts n (a multiple of 16) float16 values to float32:
//
//	for i < n: dst[i] = tensor.F16ToF32(src[i])
//
//go:noescape
func widenF16512(dst *float32, src *uint16, n int)

// widenF16256 is widenF16512 on ymm registers (F16C), n a multiple of 8.
//
//go:noescape
func widenF16256(dst *float32, src *uint16, n int)

// widenF16PF512 is widenF16512 that also prefetches the n values at src+pf
// bytes.
//
//go:noescape
func widenF16PF512(dst *float32, src *uint16, n int, pf int)

// widenF16PF256 is widenF16256 that also prefetches the n values at src+pf
// bytes.
//
//go:noescape
func widenF16PF256(dst *float32, src *uint16, n int, pf int)

// prefetchRows prefetches (PREFETCHT0) the first lines cache lines of each of
// rows rows, the first at p and the next stride floats further on:
//
//	for r < rows: for l < lines: prefetch(p + r*stride*4 + l*64 bytes)
//
// It reads nothing and cannot fault.
//
//go:noescape
func prefetchRows(p *float32, stride, rows, lines int)

// packT512 packs the transposed B panel of nr columns (a multiple of 16)
// from the rows of W (row stride ld) for kc values (a multiple of 16):
//
//	for j := 0; j < nr; j++ {
//		for p := 0; p < kc; p++ {
//			dst[p*nr+j] = src[j*ld+p]
//		}
//	}
//
//go:noescape
func packT512(dst *float32, nr int, src *float32, ld, kc int)

// packTH512 is packT512 for float16 rows, widened:
// dst[p*nr+j] = float32(src[j*ld+p]).
//
//go:noescape
func packTH512(dst *float32, nr int, src *uint16, ld, kc int)

// even512 sets dst[i] = src[2*i] for i < n, n a multiple of 16 (it reads
// src[0 : 2*n]):
//
//	for i := 0; i < n; i++ {
//		dst[i] = src[2*i]
//	}
//
//go:noescape
func even512(dst, src *float32, n int)

// zip512 interleaves a and b, n values each (a multiple of 16):
//
//	for i := 0; i < n; i++ {
//		dst[2*i], dst[2*i+1] = a[i], b[i]
//	}
//
//go:noescape
func zip512(dst, a, b *float32, n int)
