package tensor

// hugeMin is the size from which Alloc asks the kernel for huge pages: the
// engine's large activations are walked with strides of a whole channel
// plane (a convolution's output rows, its im2col panels), and with 4 KiB pages
// those walks miss the TLB; measured on this project's machine, a 3×3
// convolution 128→128 at 512×512 ran 1.8× faster on 2 MiB pages.
const hugeMin = 4 << 20

// Alloc returns a zeroed slice of n float32 values. Large slices are advised
// to use transparent huge pages where the OS supports it (Linux with THP in
// "madvise" or "always" mode); elsewhere this is make.
func Alloc(n int) []float32 {
	s := make([]float32, n)
	if n*4 >= hugeMin {
		adviseHuge(s)
	}
	return s
}

// Discard tells the OS that the values of s, a large buffer from Alloc that
// nothing will read again, need not be kept: its whole pages are returned
// at once (Linux), where Go would return them only after a collection and a
// scavenger pass. The buffer stays valid memory (it reads as zeros, or as
// its old values where the OS kept them) until the collector frees it. Only
// for buffers the caller owns alone; elsewhere a no-op.
func Discard(s []float32) {
	if len(s)*4 >= hugeMin {
		discard(s)
	}
}
