package osediff

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/parallel"
)

// ResampleFilter names one of Pillow's convolution resampling filters.
type ResampleFilter int

const (
	// Box is Pillow's Image.BOX (support 0.5).
	Box ResampleFilter = iota
	// Bilinear is Pillow's Image.BILINEAR (triangle, support 1).
	Bilinear
	// Hamming is Pillow's Image.HAMMING (support 1).
	Hamming
	// Bicubic is Pillow's Image.BICUBIC (a = -0.5, support 2): the default
	// filter of Image.resize for RGB images.
	Bicubic
	// Lanczos is Pillow's Image.LANCZOS (a = 3, support 3).
	Lanczos
)

func (f ResampleFilter) String() string {
	switch f {
	case Box:
		return "box"
	case Bilinear:
		return "bilinear"
	case Hamming:
		return "hamming"
	case Bicubic:
		return "bicubic"
	case Lanczos:
		return "lanczos"
	}
	return fmt.Sprintf("ResampleFilter(%d)", int(f))
}

// The filters of Pillow's libImaging/Resample.c, in float64 as there.
type pillowFilter struct {
	fn      func(x float64) float64
	support float64
}

func boxFilter(x float64) float64 {
	if x > -0.5 && x <= 0.5 {
		return 1
	}
	return 0
}

func bilinearFilter(x float64) float64 {
	x = math.Abs(x)
	if x < 1 {
		return 1 - x
	}
	return 0
}

func hammingFilter(x float64) float64 {
	x = math.Abs(x)
	if x == 0 {
		return 1
	}
	if x >= 1 {
		return 0
	}
	x *= math.Pi
	// Pillow writes the constants as C floats: 0.54f + 0.46f * cos(x).
	return math.Sin(x) / x * (float64(float32(0.54)) + float64(float32(0.46))*math.Cos(x))
}

func bicubicFilter(x float64) float64 {
	const a = -0.5
	x = math.Abs(x)
	if x < 1 {
		return ((a+2)*x-(a+3))*x*x + 1
	}
	if x < 2 {
		return (((x-5)*x+8)*x - 4) * a
	}
	return 0
}

func sincFilter(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

func lanczosFilter(x float64) float64 {
	if -3 <= x && x < 3 {
		return sincFilter(x) * sincFilter(x/3)
	}
	return 0
}

func (f ResampleFilter) pillow() (pillowFilter, error) {
	switch f {
	case Box:
		return pillowFilter{boxFilter, 0.5}, nil
	case Bilinear:
		return pillowFilter{bilinearFilter, 1}, nil
	case Hamming:
		return pillowFilter{hammingFilter, 1}, nil
	case Bicubic:
		return pillowFilter{bicubicFilter, 2}, nil
	case Lanczos:
		return pillowFilter{lanczosFilter, 3}, nil
	}
	return pillowFilter{}, fmt.Errorf("osediff: unknown resample filter %d", int(f))
}

// precisionBits is Pillow's PRECISION_BITS: 8 bits for the result, 2 for
// overflow of filters with negative lobes, in a 32-bit int.
const precisionBits = 32 - 8 - 2

// resampleCoeffs are the per-output-pixel taps of one axis: output i reads
// input pixels [start[i], start[i]+n[i]) with the fixed-point weights
// k[i*ksize : i*ksize+n[i]].
type resampleCoeffs struct {
	ksize    int
	start, n []int
	k        []int32
}

// precomputeCoeffs follows Pillow's precompute_coeffs + normalize_coeffs_8bpc:
// the box [in0, in1) of the input axis maps onto outSize pixels, the support
// widens by the down-scaling factor, the float64 weights are normalised to sum
// 1 and then rounded (half away from zero) to 22 fractional bits.
func precomputeCoeffs(inSize int, in0, in1 float32, outSize int, f pillowFilter) resampleCoeffs {
	scale := float64(in1-in0) / float64(outSize)
	filterscale := max(scale, 1)
	support := f.support * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	inv := 1 / filterscale
	c := resampleCoeffs{ksize: ksize, start: make([]int, outSize), n: make([]int, outSize), k: make([]int32, outSize*ksize)}
	w := make([]float64, ksize)
	for xx := 0; xx < outSize; xx++ {
		center := float64(in0) + (float64(xx)+0.5)*scale
		xmin := int(center - support + 0.5) // C cast: truncation toward zero
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			v := f.fn((float64(x+xmin) - center + 0.5) * inv)
			w[x] = v
			ww += v
		}
		k := c.k[xx*ksize : (xx+1)*ksize]
		for x := 0; x < xmax; x++ {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				k[x] = int32(-0.5 + v*(1<<precisionBits))
			} else {
				k[x] = int32(0.5 + v*(1<<precisionBits))
			}
		}
		c.start[xx] = xmin
		c.n[xx] = max(xmax, 0)
	}
	return c
}

// clip8 is Pillow's clip8: drop the fraction bits (arithmetic shift) and
// clamp to a byte.
func clip8(ss int32) uint8 {
	v := ss >> precisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// pillowResample resizes an interleaved 8-bit image of ch channels exactly as
// Pillow 9.x ImagingResample does for a full-image box: horizontal pass
// first (only over the rows the vertical pass reads), rounding and clipping
// to uint8 after each pass; a pass whose size is unchanged is skipped.
func pillowResample(pix []uint8, w, h, ch, ow, oh int, rf ResampleFilter) ([]uint8, error) {
	f, err := rf.pillow()
	if err != nil {
		return nil, err
	}
	if w <= 0 || h <= 0 || ow <= 0 || oh <= 0 {
		return nil, fmt.Errorf("osediff: resize %dx%d -> %dx%d: sizes must be positive", w, h, ow, oh)
	}
	if len(pix) != w*h*ch {
		return nil, fmt.Errorf("osediff: resize: %d bytes for %dx%dx%d", len(pix), w, h, ch)
	}
	needH := ow != w
	needV := oh != h
	horiz := precomputeCoeffs(w, 0, float32(w), ow, f)
	vert := precomputeCoeffs(h, 0, float32(h), oh, f)

	src, sw := pix, w
	if needH {
		// Rows the vertical pass reads: [first, last).
		first := vert.start[0]
		last := vert.start[oh-1] + vert.n[oh-1]
		if !needV {
			first, last = 0, h
		}
		tmp := make([]uint8, ow*(last-first)*ch)
		parallel.For(last-first, 8, func(lo, hi int) {
			for y := lo; y < hi; y++ {
				in := pix[(y+first)*w*ch : (y+first+1)*w*ch]
				out := tmp[y*ow*ch : (y+1)*ow*ch]
				resampleLine(out, in, ch, horiz)
			}
		})
		if needV {
			for i := range vert.start {
				vert.start[i] -= first
			}
		}
		src, sw = tmp, ow
	}
	if !needV {
		if !needH {
			return append([]uint8(nil), pix...), nil
		}
		return src, nil
	}
	out := make([]uint8, ow*oh*ch)
	stride := sw * ch
	parallel.For(oh, 8, func(lo, hi int) {
		for yy := lo; yy < hi; yy++ {
			k := vert.k[yy*vert.ksize : yy*vert.ksize+vert.n[yy]]
			base := vert.start[yy] * stride
			row := out[yy*stride : (yy+1)*stride]
			for i := range row {
				ss := int32(1 << (precisionBits - 1))
				p := base + i
				for _, kv := range k {
					ss += int32(src[p]) * kv
					p += stride
				}
				row[i] = clip8(ss)
			}
		}
	})
	return out, nil
}

// resampleLine runs the horizontal taps over one row: output pixel xx,
// channel c reads in[(start+x)*pixStride + c].
func resampleLine(out, in []uint8, ch int, c resampleCoeffs) {
	pixStride := ch
	for xx := range c.start {
		k := c.k[xx*c.ksize : xx*c.ksize+c.n[xx]]
		base := c.start[xx] * pixStride
		for cc := 0; cc < ch; cc++ {
			ss := int32(1 << (precisionBits - 1))
			p := base + cc
			for _, kv := range k {
				ss += int32(in[p]) * kv
				p += pixStride
			}
			out[xx*ch+cc] = clip8(ss)
		}
	}
}

// ResizeRGB resizes like Pillow 9.x img.resize((w, h), filter) on an RGB
// image (box = the whole image, reducing_gap = None), bit for bit.
func ResizeRGB(img *imageio.RGB8, w, h int, f ResampleFilter) (*imageio.RGB8, error) {
	pix, err := pillowResample(img.Pix, img.W, img.H, 3, w, h, f)
	if err != nil {
		return nil, err
	}
	return &imageio.RGB8{W: w, H: h, Pix: pix}, nil
}

// ResizeGray resizes a single plane (e.g. alpha) like Pillow's mode "L".
func ResizeGray(img *imageio.Gray8, w, h int, f ResampleFilter) (*imageio.Gray8, error) {
	pix, err := pillowResample(img.Pix, img.W, img.H, 1, w, h, f)
	if err != nil {
		return nil, err
	}
	return &imageio.Gray8{W: w, H: h, Pix: pix}, nil
}

// Plan is the geometry of the official pre-processing (test_osediff.py) for
// one input, plus the final output size of this port.
type Plan struct {
	InW, InH int // the input
	// PreResized tells whether the small-image pre-resize ran (a side below
	// ProcessSize // Scale); PreW x PreH is its result (= the input if not).
	PreResized bool
	PreW, PreH int
	UpW, UpH   int // after the x Scale bicubic resize
	W, H       int // working size: UpW, UpH rounded down to a multiple of 8 (Lanczos)
	OutW, OutH int // final output: Scale x the input (see ScaledSize)
}

// ScaledSize is int(scale * n) as the reference computes its intended output
// size (int(args.upscale*ori_width)), with a tolerance of 1e-9 so that a
// product such as 0.29*100 = 28.999999999999996 still gives 29.
func ScaledSize(n int, scale float64) int {
	return int(math.Floor(scale*float64(n) + 1e-9))
}

// PlanPreprocess computes the sizes of test_osediff.py's resizes for an input
// of w x h, an upscale factor scale (any positive value; the reference takes
// an integer) and the process size (official default 512):
//
//	if w < P//s or h < P//s: pre-resize (bicubic) by (P//s)/min(w,h), sizes truncated
//	resize (bicubic) to s x that size
//	resize (Lanczos) down to a multiple of 8
//
// P//s is Python's floor division (integer for an integer scale).
func PlanPreprocess(w, h int, scale float64, processSize int) (Plan, error) {
	p := Plan{InW: w, InH: h}
	if w <= 0 || h <= 0 {
		return p, fmt.Errorf("osediff: image size %dx%d", w, h)
	}
	if !(scale > 0) || math.IsInf(scale, 0) || scale > 64 {
		return p, fmt.Errorf("osediff: scale %v out of range (0, 64]", scale)
	}
	if processSize <= 0 {
		return p, fmt.Errorf("osediff: process size %d must be positive", processSize)
	}
	thr := math.Floor(float64(processSize) / scale)
	p.PreW, p.PreH = w, h
	if float64(w) < thr || float64(h) < thr {
		f := thr / float64(min(w, h))
		p.PreResized = true
		p.PreW, p.PreH = int(f*float64(w)), int(f*float64(h))
	}
	p.UpW, p.UpH = ScaledSize(p.PreW, scale), ScaledSize(p.PreH, scale)
	p.W, p.H = p.UpW-p.UpW%8, p.UpH-p.UpH%8
	p.OutW, p.OutH = ScaledSize(w, scale), ScaledSize(h, scale)
	if p.W < 8 || p.H < 8 || p.OutW < 1 || p.OutH < 1 {
		return p, fmt.Errorf("osediff: %dx%d at scale %v is too small (working size %dx%d; needs at least 8x8)", w, h, scale, p.UpW, p.UpH)
	}
	return p, nil
}

// Preprocess runs the official pre-processing chain on an RGB image with
// Pillow-exact resampling: the optional bicubic pre-resize, the bicubic
// x scale resize and the Lanczos resize to a multiple of 8. The result is the
// model's input image (and the colour-fix source).
func Preprocess(img *imageio.RGB8, scale float64, processSize int) (*imageio.RGB8, Plan, error) {
	p, err := PlanPreprocess(img.W, img.H, scale, processSize)
	if err != nil {
		return nil, p, err
	}
	cur := img
	if p.PreResized {
		if cur, err = ResizeRGB(cur, p.PreW, p.PreH, Bicubic); err != nil {
			return nil, p, err
		}
	}
	if cur, err = ResizeRGB(cur, p.UpW, p.UpH, Bicubic); err != nil {
		return nil, p, err
	}
	if p.W != p.UpW || p.H != p.UpH {
		if cur, err = ResizeRGB(cur, p.W, p.H, Lanczos); err != nil {
			return nil, p, err
		}
	}
	return cur, p, nil
}

// FinalResize brings the restored image (working size) to the output size
// of the plan with Pillow's bicubic filter on uint8 (what the reference's
// intended final output_pil.resize(...) line uses: Image.resize's default
// filter). It returns img itself when the sizes already agree.
func FinalResize(img *imageio.RGB8, p Plan) (*imageio.RGB8, error) {
	if img.W == p.OutW && img.H == p.OutH {
		return img, nil
	}
	return ResizeRGB(img, p.OutW, p.OutH, Bicubic)
}

// ResizeAlpha upscales an alpha plane of the input straight to the plan's
// output size with Pillow's bicubic filter (alpha bypasses the model).
func ResizeAlpha(a *imageio.Gray8, p Plan) (*imageio.Gray8, error) {
	if a.W == p.OutW && a.H == p.OutH {
		return a.Clone(), nil
	}
	return ResizeGray(a, p.OutW, p.OutH, Bicubic)
}
