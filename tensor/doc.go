// Package tensor holds the float32 tensor type used by every model: a shape,
// row-major strides and an offset into a shared []float32 storage, NCHW as in
// PyTorch. Views (Reshape, Permute, Narrow, Slice) share storage; Contiguous
// copies only when needed. It also converts float16 and bfloat16 to and from
// float32, as checkpoints ship them.
//
// Large storage is allocated here: New zeroes it (Alloc), Empty does not
// (AllocDirty), for outputs an operation writes in full; a buffer whose
// values are dead can be handed to the next Empty of its size (Recycle), or
// its pages given back to the OS (Discard). A computation that runs again at
// the same sizes can place its large buffers in one slab kept from call to
// call (BeginPlan: a memory plan recorded on the first call and replayed
// after), so that its later calls touch no fresh pages. Tests that poison
// Empty's buffers with NaN (PoisonDirty) catch an operation that leaves a
// value unwritten.
package tensor
