package lora

import (
	"fmt"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// MergeLinear adds scale·(b@a) to the Linear weight w in place: w [out,in]
// (a contiguous tensor or a view whose rows are dense, e.g. a row range of a
// merged qkv weight), a [r,in], b [out,r] (any strides).
func MergeLinear(w, a, b *tensor.Tensor, scale float32) error {
	if w.Rank() != 2 || a.Rank() != 2 || b.Rank() != 2 {
		return fmt.Errorf("lora: linear merge wants w [out,in], a [r,in], b [out,r]; got w %v, a %v, b %v",
			w.Shape(), a.Shape(), b.Shape())
	}
	out, in, r := w.Dim(0), w.Dim(1), a.Dim(0)
	if a.Dim(1) != in || b.Dim(0) != out || b.Dim(1) != r {
		return fmt.Errorf("lora: linear merge shapes do not fit: w %v, a %v, b %v", w.Shape(), a.Shape(), b.Shape())
	}
	if !w.HasData() {
		return fmt.Errorf("lora: linear merge: w %v has no data", w.Shape())
	}
	ldw := w.Strides()[0]
	if w.Strides()[1] != 1 && in > 1 {
		return fmt.Errorf("lora: linear merge: w %v has strides %v (rows must be dense)", w.Shape(), w.Strides())
	}
	if out == 0 || in == 0 {
		return nil
	}
	if out == 1 {
		ldw = in
	}
	wd := w.Storage()[w.Offset():]
	addProduct(wd, ldw, out, in, a.Contiguous().Data(), b.Contiguous().Data(), r, scale)
	return nil
}

// MergeConv adds the LoRA delta to the Conv2d weight w in place: w
// [out,in,kh,kw] (contiguous), a [r,in,kh,kw], b [out,r,1,1] or [out,r]:
// w += scale·(b[:,:,0,0] @ a.reshape(r,-1)).reshape(w.shape).
func MergeConv(w, a, b *tensor.Tensor, scale float32) error {
	if w.Rank() != 4 || a.Rank() != 4 || (b.Rank() != 4 && b.Rank() != 2) {
		return fmt.Errorf("lora: conv merge wants w [out,in,kh,kw], a [r,in,kh,kw], b [out,r,1,1]; got w %v, a %v, b %v",
			w.Shape(), a.Shape(), b.Shape())
	}
	out, r := w.Dim(0), a.Dim(0)
	if !tensor.SameShape(a.Shape()[1:], w.Shape()[1:]) || b.Dim(0) != out || b.Dim(1) != r ||
		(b.Rank() == 4 && (b.Dim(2) != 1 || b.Dim(3) != 1)) {
		return fmt.Errorf("lora: conv merge shapes do not fit: w %v, a %v, b %v", w.Shape(), a.Shape(), b.Shape())
	}
	if !w.HasData() || !w.IsContiguous() {
		return fmt.Errorf("lora: conv merge: w %v must be a contiguous tensor with data", w.Shape())
	}
	k := w.Numel() / max(out, 1)
	if out == 0 || k == 0 {
		return nil
	}
	addProduct(w.Data(), k, out, k, a.Contiguous().Data(), b.Contiguous().Data(), r, scale)
	return nil
}

// merge dispatches on the rank of w (2: Linear, 4: Conv2d).
func merge(w, a, b *tensor.Tensor, scale float32) error {
	if w.Rank() == 4 {
		return MergeConv(w, a, b, scale)
	}
	return MergeLinear(w, a, b, scale)
}

// addProduct computes w[i*ldw+j] += scale·Σ_p b[i*r+p]·a[p*k+j] for an out×k
// block of w: one Sgemm with beta = 1.
func addProduct(w []float32, ldw, out, k int, a, b []float32, r int, scale float32) {
	kernels.Sgemm(false, false, out, k, r, scale, b, r, a, k, 1, w, ldw)
}
