// Package tensor holds the float32 tensor type used by every model: a shape,
// row-major strides and an offset into a shared []float32 storage, NCHW as in
// PyTorch. Views (Reshape, Permute, Narrow, Slice) share storage; Contiguous
// copies only when needed. It also converts float16 and bfloat16 to and from
// float32, as checkpoints ship them.
package tensor
