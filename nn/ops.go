package nn

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// Add returns a + b (same shapes).
func Add(a, b *tensor.Tensor) *tensor.Tensor {
	mustSame("Add", a, b)
	y := tensor.Empty(a.Shape()...)
	kernels.Add(y.Data(), a.Contiguous().Data(), b.Contiguous().Data())
	return y
}

// AddInPlace does a += b (a contiguous, same shapes) and returns a.
func AddInPlace(a, b *tensor.Tensor) *tensor.Tensor {
	mustSame("AddInPlace", a, b)
	d := a.Data()
	kernels.Add(d, d, b.Contiguous().Data())
	return a
}

// SiLU returns x*sigmoid(x).
func SiLU(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.Empty(x.Shape()...)
	kernels.SiLU(x.Contiguous().Data(), y.Data())
	return y
}

// GELU returns the exact GELU of x.
func GELU(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.Empty(x.Shape()...)
	kernels.GELU(x.Contiguous().Data(), y.Data())
	return y
}

// Upsample2x is nearest-neighbour ×2 upsampling of x [N, C, H, W].
func Upsample2x(x *tensor.Tensor) *tensor.Tensor {
	x = x.Contiguous()
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	y := tensor.Empty(n, c, 2*h, 2*w) // [N, C, 2H, 2W]
	kernels.Upsample2xNearest(x.Data(), y.Data(), n*c, h, w)
	return y
}

// ConcatChannels concatenates [N, Ci, H, W] tensors along dimension 1.
func ConcatChannels(xs ...*tensor.Tensor) *tensor.Tensor {
	n, h, w := xs[0].Dim(0), xs[0].Dim(2), xs[0].Dim(3)
	ct := 0
	for _, x := range xs {
		if x.Dim(0) != n || x.Dim(2) != h || x.Dim(3) != w {
			panic(fmt.Sprintf("nn.ConcatChannels: %v vs %v", x.Shape(), xs[0].Shape()))
		}
		ct += x.Dim(1)
	}
	y := tensor.Empty(n, ct, h, w) // [N, sum Ci, H, W]
	hw := h * w
	yd := y.Data()
	for b := 0; b < n; b++ {
		off := b * ct * hw
		for _, x := range xs {
			sz := x.Dim(1) * hw
			copy(yd[off:off+sz], x.Contiguous().Data()[b*sz:(b+1)*sz])
			off += sz
		}
	}
	return y
}

func mustSame(op string, a, b *tensor.Tensor) {
	if !tensor.SameShape(a.Shape(), b.Shape()) {
		panic(fmt.Sprintf("nn.%s: shapes %v and %v", op, a.Shape(), b.Shape()))
	}
}
