package ram

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// ImageNet normalisation of the tagger input (torchvision Normalize).
var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
)

// Preprocess turns img [1, 3, H, W] (RGB in [0, 1], ToTensor's output) into
// the tagger input [1, 3, size, size]: torchvision's tensor Resize((size,
// size)) (bilinear, align_corners=False, no antialias, aspect ratio not
// kept) then Normalize(ImageNet mean, std), in float32 as torch's CPU
// kernels compute them.
func Preprocess(img *tensor.Tensor, size int) (*tensor.Tensor, error) {
	if img == nil || img.Rank() != 4 || img.Dim(0) != 1 || img.Dim(1) != 3 || img.Dim(2) <= 0 || img.Dim(3) <= 0 {
		var shape []int
		if img != nil {
			shape = img.Shape()
		}
		return nil, fmt.Errorf("ram: image must be [1, 3, H, W], got %v", shape)
	}
	if size <= 0 {
		return nil, fmt.Errorf("ram: input size %d", size)
	}
	x := img.Contiguous().Data()
	h, w := img.Dim(2), img.Dim(3)
	ys, xs := linearTaps(h, size), linearTaps(w, size)
	out := tensor.New(1, 3, size, size) // [1, 3, S, S]
	od := out.Data()
	parallel.For(3*size, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			c, i := r/size, r%size
			ty := ys[i]
			row0, row1 := x[(c*h+ty.i0)*w:], x[(c*h+ty.i1)*w:]
			dst := od[(c*size+i)*size : (c*size+i+1)*size]
			m, s := imagenetMean[c], imagenetStd[c]
			for j := range dst {
				tx := xs[j]
				t0 := row0[tx.i0]*tx.w0 + row0[tx.i1]*tx.w1
				t1 := row1[tx.i0]*tx.w0 + row1[tx.i1]*tx.w1
				v := t0*ty.w0 + t1*ty.w1
				dst[j] = (v - m) / s
			}
		}
	})
	return out, nil
}

// tap is one output index of a linear resize: out = w0·in[i0] + w1·in[i1].
type tap struct {
	i0, i1 int
	w0, w1 float32
}

// linearTaps computes the source indices and weights of a bilinear resize
// from n to m samples as PyTorch's upsample_bilinear2d (align_corners=False)
// does on CPU: scale = float32(n)/float32(m); src = scale·(i+0.5) - 0.5 in
// float64, clamped below at 0; i0 = min(floor(src), n-1); w1 =
// float32(clamp(src - i0, 0, 1)) (the fraction is taken before any rounding
// to float32), w0 = 1 - w1 in float32. Equal sizes copy.
func linearTaps(n, m int) []tap {
	t := make([]tap, m)
	if n == m {
		for i := range t {
			t[i] = tap{i0: i, i1: i, w0: 1}
		}
		return t
	}
	scale := float32(n) / float32(m)
	for i := range t {
		src := max(float64(scale)*(float64(i)+0.5)-0.5, 0)
		i0 := min(int(math.Floor(src)), n-1)
		w1 := float32(min(max(src-float64(i0), 0), 1))
		i1 := i0
		if i0 < n-1 {
			i1 = i0 + 1
		}
		t[i] = tap{i0: i0, i1: i1, w0: 1 - w1, w1: w1}
	}
	return t
}
