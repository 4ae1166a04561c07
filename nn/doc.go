// Package nn holds the layers shared by every model: structs of weights with
// one Forward each, bound to checkpoint keys by `weights:"..."` struct tags
// (see package checkpoint): a *tensor.Tensor field tagged "weight" binds the
// key "<prefix>weight"; a nested struct (or pointer) tagged "conv1" binds the
// keys under "<prefix>conv1."; a slice of structs tagged "resnets" binds
// "<prefix>resnets.0.", "resnets.1.", ... (the constructor sizes the slice);
// ",optional" marks a tensor that may be absent (then left nil). Constructors
// create tensors with tensor.Shaped so that binding can check shapes.
//
// Conv2d.ForwardUpsample2x computes a 3×3 convolution of a nearest-×2
// upsampled input as four 2×2 phase convolutions of the input itself (4/9
// of the multiply-adds; upsample.go); the VAE decoder and the UNet use it.
package nn
