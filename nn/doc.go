// Package nn holds the layers shared by every model: structs of weights with
// one Forward each, bound to checkpoint keys by `weights:"..."` struct tags
// (see package checkpoint): a *tensor.Tensor field tagged "weight" binds the
// key "<prefix>weight"; a nested struct (or pointer) tagged "conv1" binds the
// keys under "<prefix>conv1."; a slice of structs tagged "resnets" binds
// "<prefix>resnets.0.", "resnets.1.", ... (the constructor sizes the slice);
// ",optional" marks a tensor that may be absent (then left nil). Constructors
// create tensors with tensor.Shaped so that binding can check shapes.
package nn
