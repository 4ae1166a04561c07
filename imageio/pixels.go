package imageio

import (
	"fmt"

	"github.com/osediff-go/osediff/tensor"
)

// RGB8 is an 8-bit RGB image, 3 interleaved bytes per pixel, rows of 3*W
// bytes, top row first.
type RGB8 struct {
	W, H int
	Pix  []uint8
}

// NewRGB8 allocates a black w x h image.
func NewRGB8(w, h int) *RGB8 { return &RGB8{W: w, H: h, Pix: make([]uint8, 3*w*h)} }

// Gray8 is an 8-bit single-channel plane (used for alpha), rows of W bytes.
type Gray8 struct {
	W, H int
	Pix  []uint8
}

// NewGray8 allocates a zero w x h plane.
func NewGray8(w, h int) *Gray8 { return &Gray8{W: w, H: h, Pix: make([]uint8, w*h)} }

// Clone returns a deep copy.
func (m *RGB8) Clone() *RGB8 {
	return &RGB8{W: m.W, H: m.H, Pix: append([]uint8(nil), m.Pix...)}
}

// Clone returns a deep copy.
func (m *Gray8) Clone() *Gray8 {
	return &Gray8{W: m.W, H: m.H, Pix: append([]uint8(nil), m.Pix...)}
}

// ToTensor converts to a [1,3,H,W] float32 tensor with v/255 computed in
// float32, as torchvision's ToTensor does for a PIL RGB image.
func ToTensor(m *RGB8) *tensor.Tensor {
	hw := m.W * m.H
	out := make([]float32, 3*hw)
	for i := 0; i < hw; i++ {
		out[i] = float32(m.Pix[3*i]) / 255
		out[hw+i] = float32(m.Pix[3*i+1]) / 255
		out[2*hw+i] = float32(m.Pix[3*i+2]) / 255
	}
	return tensor.FromData(out, 1, 3, m.H, m.W)
}

// FromTensor converts a [1,3,H,W] (or [3,H,W]) tensor with values in [0,1]
// to 8 bits by TRUNCATION of x*255 computed in float32, as torchvision's
// ToPILImage does (tensor.mul(255).byte()). Values outside [0,1] are clamped
// (the reference only converts clamped tensors) and NaN becomes 0.
func FromTensor(t *tensor.Tensor) (*RGB8, error) {
	s := t.Shape()
	if len(s) == 4 {
		if s[0] != 1 {
			return nil, fmt.Errorf("imageio: FromTensor: batch %d, want 1", s[0])
		}
		s = s[1:]
	}
	if len(s) != 3 || s[0] != 3 {
		return nil, fmt.Errorf("imageio: FromTensor: shape %v, want [1,3,H,W]", t.Shape())
	}
	h, w := s[1], s[2]
	d := t.Data()
	m := NewRGB8(w, h)
	hw := w * h
	for c := 0; c < 3; c++ {
		plane := d[c*hw : (c+1)*hw]
		for i, x := range plane {
			m.Pix[3*i+c] = truncByte(x)
		}
	}
	return m, nil
}

// truncByte is torch's float -> uint8 conversion of x*255 for x in [0,1].
func truncByte(x float32) uint8 {
	v := x * 255 // float32 multiply, as tensor.mul(255)
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= 255:
		return 255
	}
	return uint8(v)
}
