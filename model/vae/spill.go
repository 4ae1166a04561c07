package vae

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/osediff-go/osediff/tensor"
)

// Spilling parks the tiles of a lockstep run in temporary files between the
// moments they are used. vaehook's tiled VAE runs every tile up to each
// GroupNorm before any tile may go on (the norm's statistics are shared), so
// at a full-resolution level all tiles' activations are alive at once: about
// 6 GB for a 2048×2048 decode. With spilling only the tile being computed
// (and its outputs) is in memory; the others sit in unlinked files that the
// kernel keeps in its page cache when it can and writes to disk when memory
// is short. The values are written and read back bit for bit, so the result
// is identical; the cost is copying each tile through the file once per
// GroupNorm.
//
// Two things keep that copy cheap. A spiller reuses its files: a file whose
// tile is consumed goes back to a free list and the next park overwrites
// it, so the kernel copies into page-cache pages it already has instead of
// allocating (and zeroing) new ones. And the memory a parked or consumed
// tile leaves is recycled (tensor.Recycle) for the next tile loaded or
// computed, instead of being handed back to the OS and faulted in again: on
// this project's VM a fresh page costs about 1.5 s per GiB, the copy itself
// a fraction of that. Both copies run on every core.

// SpillError is the panic value of a tiled forward whose parked tile could
// not be read back; EncoderForwardErr and DecodeErr return it as an error.
type SpillError struct{ Err error }

func (e *SpillError) Error() string { return "vae: reading a spilled tile back: " + e.Err.Error() }
func (e *SpillError) Unwrap() error { return e.Err }

// spiller parks the tensors registered with it while the values of those
// held in memory would exceed above bytes: a tile is parked when it is made
// (or used read-only) and the registered tensors in memory, it included,
// take more than above.
type spiller struct {
	dir      string
	above    int64
	mu       sync.Mutex
	resident int64                   // bytes of registered tensors in memory
	maxTile  int64                   // bytes of the largest tensor registered
	off      bool                    // a write failed: keep everything in memory from then on
	live     map[*tensor.Tensor]bool // adopted and not yet released, for close
	free     []*os.File              // spill files whose values are dead, for reuse
}

// recycleTiles is how many of the largest tile's buffers may wait for reuse
// (tensor.Recycle): a step that ends leaves its input and its outputs there
// (a ResnetBlock2D's first pass: the input and two outputs of half its
// size), and the next step takes them back. Waiting buffers are no more
// than a step holds while it runs, so they do not raise the peak.
const recycleTiles = 2

// recycleDropped turns recycling off when false (A/B measurements).
var recycleDropped = true

// newSpiller returns the spiller of a tiled (or untiled) forward. Without a
// budget it never parks, but the tensors are still registered, so that each
// hands its buffer on (or its pages back) as soon as its last use is over
// (see consume and drop).
func newSpiller(s Spill) *spiller {
	sp := &spiller{dir: s.Dir, above: s.Above}
	if s.Above <= 0 {
		sp.above = math.MaxInt64
	}
	return sp
}

func nbytes(t *tensor.Tensor) int64 { return int64(t.Numel()) * 4 }

// held is the memory t's values take, for the budget: its buffer's
// capacity, which is more than nbytes for a tensor written over the start of
// a larger buffer (an in-place shortcut: see shortcut) and holding all of it.
func held(t *tensor.Tensor) int64 { return int64(cap(t.Storage())) * 4 }

// account adds d bytes to the resident total.
func (sp *spiller) account(d int64) {
	sp.mu.Lock()
	sp.resident += d
	sp.mu.Unlock()
}

// parked is the spill state of a registered tensor: its spiller and, once
// written, the file holding its values (valid while the tensor is unchanged).
type parked struct {
	sp *spiller
	f  *os.File
	// mean and variance are tileMoments of the values in f, taken when they
	// were written, so that a shared GroupNorm need not read them back.
	mean, variance []float64
}

// registry maps a registered tensor to its spill state. Tensors are keys by
// identity; a tensor leaves the registry when released.
var registry sync.Map // *tensor.Tensor → *parked

// adopt registers t with sp (nil sp: nothing), resident.
func (sp *spiller) adopt(t *tensor.Tensor) *tensor.Tensor {
	if sp != nil && t != nil {
		registry.Store(t, &parked{sp: sp})
		sp.mu.Lock()
		if sp.live == nil {
			sp.live = map[*tensor.Tensor]bool{}
		}
		sp.live[t] = true
		if t.HasData() {
			sp.resident += held(t)
		}
		sp.maxTile = max(sp.maxTile, nbytes(t))
		sp.mu.Unlock()
	}
	return t
}

// close releases every tensor sp adopted (the end of the tiled call, or a
// panic in it): no file outlives the call (but for the next call's reuse
// while a Hold is active), and no recycled buffer outlives it waiting for
// reuse.
func (sp *spiller) close() {
	if sp == nil {
		return
	}
	sp.mu.Lock()
	live := sp.live
	sp.live = nil
	sp.mu.Unlock()
	for t := range live {
		release(t)
	}
	sp.mu.Lock()
	free := sp.free
	sp.free = nil
	sp.mu.Unlock()
	filePool.Lock()
	if filePool.holds > 0 {
		if filePool.free == nil {
			filePool.free = map[string][]*os.File{}
		}
		filePool.free[sp.dir] = append(filePool.free[sp.dir], free...)
		free = nil
	}
	filePool.Unlock()
	for _, f := range free {
		f.Close()
	}
	if recycleDropped {
		tensor.ReleaseRecycled()
	}
}

// spillOf returns the spiller t is registered with, or nil.
func spillOf(t *tensor.Tensor) *spiller {
	if v, ok := registry.Load(t); ok {
		return v.(*parked).sp
	}
	return nil
}

// derive registers the outputs computed from t with t's spiller.
func derive(t *tensor.Tensor, outs ...*tensor.Tensor) {
	if sp := spillOf(t); sp != nil {
		for _, o := range outs {
			sp.adopt(o)
		}
	}
}

// over reports whether the registered tensors in memory exceed the budget.
func (sp *spiller) over() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return !sp.off && sp.resident > sp.above
}

// park writes t's values to a spill file (a free one of the spiller's, or a
// new one) and drops them from memory, when t is registered and its spiller
// is over budget. A failed write keeps t in memory and turns spilling off
// for the call.
func park(t *tensor.Tensor) {
	v, ok := registry.Load(t)
	if !ok || !t.HasData() {
		return
	}
	pk := v.(*parked)
	if !pk.sp.over() {
		return
	}
	closeFile(pk)
	if t.Rank() == 4 && t.Dim(1)%tiledNormGroups == 0 {
		pk.mean, pk.variance = tileMoments(t)
	}
	f, err := pk.sp.file(nbytes(t))
	if err == nil {
		d := t.Contiguous().Data()
		err = copyFile(floatBytes(d), f, true)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		pk.mean, pk.variance = nil, nil
		pk.sp.mu.Lock()
		pk.sp.off = true
		pk.sp.mu.Unlock()
		slog.Warn("vae: cannot spill tiles to disk; keeping them in memory", "dir", pk.sp.dir, "err", err)
		return
	}
	pk.f = f
	spilledBytes.Add(nbytes(t))
	spillParks.Add(1)
	pk.sp.account(-held(t))
	pk.sp.drop(t)
}

// file returns a spill file for n bytes: the smallest free one that holds
// them, else the largest free one (it grows), else a new unlinked file.
// A file from the calls before, kept while a Hold is active (see Hold),
// comes before growing one of the spiller's own or making a new one.
func (sp *spiller) file(n int64) (*os.File, error) {
	sp.mu.Lock()
	if best, size := pickFile(sp.free, n); best >= 0 && size >= n {
		f := sp.free[best]
		sp.free = slices.Delete(sp.free, best, best+1)
		sp.mu.Unlock()
		return f, nil
	}
	sp.mu.Unlock()
	filePool.Lock()
	if best, _ := pickFile(filePool.free[sp.dir], n); best >= 0 {
		f := filePool.free[sp.dir][best]
		filePool.free[sp.dir] = slices.Delete(filePool.free[sp.dir], best, best+1)
		filePool.Unlock()
		return f, nil
	}
	filePool.Unlock()
	sp.mu.Lock()
	if best, _ := pickFile(sp.free, n); best >= 0 {
		f := sp.free[best]
		sp.free = slices.Delete(sp.free, best, best+1)
		sp.mu.Unlock()
		return f, nil
	}
	sp.mu.Unlock()
	f, err := os.CreateTemp(sp.dir, "osediff-tile-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // unlinked: the pages go when the file is closed
	spillFilesMade.Add(1)
	return f, nil
}

// pickFile returns the index and size of the smallest of files that holds
// n bytes, else of the largest (-1: none).
func pickFile(files []*os.File, n int64) (best int, bestSize int64) {
	best = -1
	for i, f := range files {
		st, err := f.Stat()
		if err != nil {
			continue
		}
		sz := st.Size()
		fits, bestFits := sz >= n, bestSize >= n
		if best < 0 || (fits && (!bestFits || sz < bestSize)) || (!fits && !bestFits && sz > bestSize) {
			best, bestSize = i, sz
		}
	}
	return best, bestSize
}

// filePool keeps the spill files of calls that ended while a Hold is
// active, by directory, for the calls after them.
var filePool struct {
	sync.Mutex
	holds int
	free  map[string][]*os.File
}

// Hold keeps, until the returned function is called (once; holds nest),
// what tiled and untiled forwards leave behind for the next ones to reuse:
// their spill files, and the pages of the memory plans' slab
// (tensor.HoldPlans). A pipeline holds across one image's VAE encode, UNet
// and decode, so that the decode writes its parked tiles over the page
// cache the encode's files already have and places its activations in
// pages the encode touched, instead of faulting in new ones: on this
// project's VM a page new to the process costs 1.5–3.5 s per GiB (the host
// backs it again), a page reused a small fraction of that. The files are
// unlinked; released, they are closed and their pages freed.
func Hold() (release func()) {
	releasePlans := tensor.HoldPlans()
	filePool.Lock()
	filePool.holds++
	filePool.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			filePool.Lock()
			filePool.holds--
			var closing []*os.File
			if filePool.holds == 0 {
				for _, fs := range filePool.free {
					closing = append(closing, fs...)
				}
				filePool.free = nil
			}
			filePool.Unlock()
			for _, f := range closing {
				f.Close()
			}
			releasePlans()
		})
	}
}

// copyFile writes b to f from offset 0 (write) or reads it back, in one
// piece per core: the kernel's copies into and out of the page cache run
// in parallel. A short read is io.ErrUnexpectedEOF.
func copyFile(b []byte, f *os.File, write bool) error {
	const minPart = 16 << 20
	parts := max(1, min(runtime.GOMAXPROCS(0), len(b)/minPart))
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := len(b)*p/parts, len(b)*(p+1)/parts
		wg.Go(func() {
			var n int
			var err error
			if write {
				n, err = f.WriteAt(b[lo:hi], int64(lo))
			} else {
				n, err = f.ReadAt(b[lo:hi], int64(lo))
			}
			if n != hi-lo && (err == nil || err == io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			errs[p] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// floatBytes is d's memory as bytes, for the files.
func floatBytes(d []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), len(d)*4)
}

// drop detaches the values of a registered tensor and hands its buffer to
// the next activation of its size (tensor.Recycle, while at most
// recycleTiles of the largest tile's bytes wait) or returns its pages to the
// OS at once (tensor.Discard, with recycling off): registered tensors are
// the tiled run's own (clones of the input and layer outputs), shared with
// nothing.
func (sp *spiller) drop(t *tensor.Tensor) {
	if recycleDropped {
		sp.mu.Lock()
		limit := recycleTiles * sp.maxTile
		sp.mu.Unlock()
		tensor.Recycle(t.Storage(), int(min(limit, math.MaxInt/2)))
	} else {
		tensor.Discard(t.Storage())
	}
	t.DropData()
}

// spilledBytes counts the bytes parked since the process started, spillParks
// the parks and spillFilesMade the files created for them (tests).
var spilledBytes, spillParks, spillFilesMade atomic.Int64

// unload drops t's values again after a read-only use, when its file still
// holds them (a tensor parked and loaded, unchanged since).
func unload(t *tensor.Tensor) {
	if v, ok := registry.Load(t); ok && v.(*parked).f != nil && t.HasData() {
		v.(*parked).sp.account(-held(t))
		v.(*parked).sp.drop(t)
	}
}

// load brings a parked t back into memory (a no-op for a resident tensor)
// and returns it; the file is kept for unload. A failed read panics with a
// *SpillError.
func load(t *tensor.Tensor) *tensor.Tensor {
	if t.HasData() {
		return t
	}
	v, ok := registry.Load(t)
	if !ok || v.(*parked).f == nil {
		panic(fmt.Sprintf("vae: tile %v has no values and no spill file", t.Shape()))
	}
	d := tensor.AllocDirty(t.Numel()) // overwritten by the read
	if err := copyFile(floatBytes(d), v.(*parked).f, false); err != nil {
		panic(&SpillError{err})
	}
	t.SetData(d)
	v.(*parked).sp.account(held(t))
	return t
}

// changed marks t's file stale (t is about to be written in place).
func changed(t *tensor.Tensor) {
	if v, ok := registry.Load(t); ok {
		closeFile(v.(*parked))
	}
}

// release forgets t (its last use is over): the file is closed and t leaves
// the registry and the budget. The values, if resident, stay with t.
func release(t *tensor.Tensor) {
	if v, ok := registry.LoadAndDelete(t); ok {
		pk := v.(*parked)
		closeFile(pk)
		pk.sp.mu.Lock()
		delete(pk.sp.live, t)
		if t.HasData() {
			pk.sp.resident -= held(t)
		}
		pk.sp.mu.Unlock()
	}
}

// consume is release for a tensor whose values are dead: a registered one
// also hands its buffer on (see drop).
func consume(t *tensor.Tensor) {
	if v, ok := registry.Load(t); ok {
		release(t)
		v.(*parked).sp.drop(t)
	}
}

// closeFile hands pk's spill file (its values dead) to the spiller's free
// list for the next park to overwrite.
func closeFile(pk *parked) {
	if pk.f != nil {
		pk.sp.mu.Lock()
		if pk.sp.live == nil { // closed: the call is over
			pk.f.Close()
		} else {
			pk.sp.free = append(pk.sp.free, pk.f)
		}
		pk.sp.mu.Unlock()
		pk.f = nil
	}
	pk.mean, pk.variance = nil, nil
}

// parkedMoments returns the tileMoments taken when t was parked (nil when
// t is not parked, or changed since).
func parkedMoments(t *tensor.Tensor) (mean, variance []float64) {
	if v, ok := registry.Load(t); ok && v.(*parked).f != nil {
		return v.(*parked).mean, v.(*parked).variance
	}
	return nil, nil
}

// tileStep runs f on the tile x (loaded if parked) and returns its output,
// registered with x's spiller and parked when over budget; x is consumed.
func tileStep(x *tensor.Tensor, f func(x *tensor.Tensor) *tensor.Tensor) *tensor.Tensor {
	y := f(load(x))
	derive(x, y)
	consume(x)
	park(y)
	return y
}
