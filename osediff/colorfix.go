package osediff

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// The colour corrections of the reference (my_utils/wavelet_color_fix.py),
// applied after the VAE decode: the restored image (target) takes the colour
// statistics (AdaIN) or the low frequencies (wavelet) of the upscaled input
// (source). Both work on [1,3,H,W] float32 tensors in [0,1] and end with
// clamp(0,1), in the reference's float32 order of operations.

// adainEps is calc_mean_std's eps, added to the unbiased variance.
const adainEps = 1e-5

// AdaIN is adain_color_fix: per channel,
// out = (t - mean_t)/std_t * std_s + mean_s with std = sqrt(var_unbiased + 1e-5),
// clamped to [0,1]. target and source must be [1,C,*,*] with the same C (the
// sizes may differ). It panics on other shapes (a programming error).
func AdaIN(target, source *tensor.Tensor) *tensor.Tensor {
	ts, ss := target.Shape(), source.Shape()
	if len(ts) != 4 || len(ss) != 4 || ts[0] != 1 || ss[0] != 1 || ts[1] != ss[1] {
		panic(fmt.Sprintf("osediff.AdaIN: shapes %v and %v, want [1,C,H,W] with the same C", ts, ss))
	}
	c := ts[1]
	thw, shw := ts[2]*ts[3], ss[2]*ss[3]
	t, s := target.Data(), source.Data()
	out := tensor.New(ts...)
	o := out.Data()
	for ch := 0; ch < c; ch++ {
		tm, tsd := meanStd(t[ch*thw : (ch+1)*thw])
		sm, ssd := meanStd(s[ch*shw : (ch+1)*shw])
		src, dst := t[ch*thw:(ch+1)*thw], o[ch*thw:(ch+1)*thw]
		for i, v := range src {
			x := float32((v-tm)/tsd*ssd) + sm // float32, no fused multiply-add, as torch
			dst[i] = clamp01(x)
		}
	}
	return out
}

// meanStd is calc_mean_std for one channel: torch's mean (sum, then divide
// in float32) and sqrt(var(unbiased) + eps) with the variance accumulated in
// float64 (torch's CPU Welford reduction) and rounded to float32.
func meanStd(x []float32) (mean, std float32) {
	n := len(x)
	var sum float64
	for _, v := range x {
		sum += float64(v)
	}
	mean = float32(sum) / float32(n)
	m64 := sum / float64(n)
	var ss float64
	for _, v := range x {
		d := float64(v) - m64
		ss += d * d
	}
	variance := float32(math.NaN())
	if n > 1 {
		variance = float32(ss / float64(n-1))
	}
	std = float32(math.Sqrt(float64(variance + adainEps)))
	return mean, std
}

func clamp01(x float32) float32 {
	if x < 0 {
		return 0
	}
	if x > 1 {
		return 1
	}
	return x // NaN stays NaN, as torch.clamp
}

// waveletLevels is wavelet_decomposition's default number of levels.
const waveletLevels = 5

// WaveletColorFix is wavelet_color_fix: both images are split into high
// frequencies (the sum over 5 levels of image - blur, the blur a 3x3
// [1,2,1]x[1,2,1]/16 kernel with dilation 2^i on a replicate-padded image)
// and the last low-frequency level; the result is high(target) + low(source),
// clamped to [0,1]. target and source must have the same [1,C,H,W] shape; it
// panics otherwise (a programming error).
func WaveletColorFix(target, source *tensor.Tensor) *tensor.Tensor {
	ts, ss := target.Shape(), source.Shape()
	if len(ts) != 4 || ts[0] != 1 || !tensor.SameShape(ts, ss) {
		panic(fmt.Sprintf("osediff.WaveletColorFix: shapes %v and %v, want the same [1,C,H,W]", ts, ss))
	}
	c, h, w := ts[1], ts[2], ts[3]
	hw := h * w
	t, s := target.Data(), source.Data()
	out := tensor.New(ts...)
	o := out.Data()
	tmp := make([]float32, 4*hw)
	{
		for ch := 0; ch < c; ch++ {
			high := o[ch*hw : (ch+1)*hw] // the target's high frequencies, accumulated in place
			for i := range high {
				high[i] = 0
			}
			img, low := tmp[:hw], tmp[hw:2*hw]
			copy(img, t[ch*hw:(ch+1)*hw])
			for lv := 0; lv < waveletLevels; lv++ {
				waveletBlur(low, img, h, w, 1<<lv)
				for i := range high {
					high[i] += img[i] - low[i]
				}
				img, low = low, img
			}
			// img now holds the target's last low level (unused).
			simg, slow := tmp[2*hw:3*hw], tmp[3*hw:]
			copy(simg, s[ch*hw:(ch+1)*hw])
			for lv := 0; lv < waveletLevels; lv++ {
				waveletBlur(slow, simg, h, w, 1<<lv)
				simg, slow = slow, simg
			}
			for i := range high {
				high[i] = clamp01(high[i] + simg[i])
			}
		}
	}
	return out
}

// waveletBlur is wavelet_blur on one plane: replicate padding by r, then the
// 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16 with dilation r. The products are
// exact (power-of-two weights); the nine terms are summed in float32 row by
// row.
func waveletBlur(dst, src []float32, h, w, r int) {
	parallel.For(h, 16, func(ylo, yhi int) { blurRows(dst, src, h, w, r, ylo, yhi) })
}

func blurRows(dst, src []float32, h, w, r, ylo, yhi int) {
	const k0, k1, k2 = 0.0625, 0.125, 0.25 // corner, edge, centre
	clampi := func(v, n int) int {
		if v < 0 {
			return 0
		}
		if v >= n {
			return n - 1
		}
		return v
	}
	for y := ylo; y < yhi; y++ {
		up := src[clampi(y-r, h)*w : clampi(y-r, h)*w+w]
		mid := src[y*w : y*w+w]
		dn := src[clampi(y+r, h)*w : clampi(y+r, h)*w+w]
		out := dst[y*w : y*w+w]
		// Same summation order everywhere: row by row, left to right.
		px := func(xl, x, xr int) float32 {
			acc := up[xl] * k0
			acc += up[x] * k1
			acc += up[xr] * k0
			acc += mid[xl] * k1
			acc += mid[x] * k2
			acc += mid[xr] * k1
			acc += dn[xl] * k0
			acc += dn[x] * k1
			acc += dn[xr] * k0
			return acc
		}
		lo, hi := min(r, w), max(w-r, min(r, w))
		for x := 0; x < lo; x++ {
			out[x] = px(clampi(x-r, w), x, clampi(x+r, w))
		}
		if hi > lo {
			// Interior: the same sums without clamping, on shifted views.
			n := hi - lo
			ul, uc, ur := up[lo-r:lo-r+n], up[lo:lo+n], up[lo+r:lo+r+n]
			ml, mc, mr := mid[lo-r:lo-r+n], mid[lo:lo+n], mid[lo+r:lo+r+n]
			dl, dc, dr := dn[lo-r:lo-r+n], dn[lo:lo+n], dn[lo+r:lo+r+n]
			o := out[lo:hi]
			for i := range o {
				acc := ul[i] * k0
				acc += uc[i] * k1
				acc += ur[i] * k0
				acc += ml[i] * k1
				acc += mc[i] * k2
				acc += mr[i] * k1
				acc += dl[i] * k0
				acc += dc[i] * k1
				acc += dr[i] * k0
				o[i] = acc
			}
		}
		for x := hi; x < w; x++ {
			out[x] = px(clampi(x-r, w), x, clampi(x+r, w))
		}
	}
}
