package vae

import (
	"fmt"

	"github.com/osediff-go/osediff/tensor"
)

// box is a rectangle [x0, x1) × [y0, y1), vaehook's bbox order.
type box struct{ x0, x1, y0, y1 int }

// floorDiv and floorMod are Python's // and % (b > 0).
func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func floorMod(a, b int) int { return a - b*floorDiv(a, b) }

// ceilDiv is math.ceil(a / b) for b > 0.
func ceilDiv(a, b int) int { return -floorDiv(-a, b) }

// bestTileSize is vaehook's get_best_tile_size: lower rounded up to a
// multiple of 32, 16, ..., 2 (the largest that stays <= upper), else lower.
// For lower <= 0 it follows Python's modulo (it can return 0).
func bestTileSize(lower, upper int) int {
	for d := 32; d >= 2; d /= 2 {
		r := floorMod(lower, d)
		if r == 0 {
			return lower
		}
		if c := lower - r + d; c <= upper {
			return c
		}
	}
	return lower
}

// splitTiles is vaehook's split_tiles for an h×w input: the padded input box
// of every tile (row-major) and its output box in output coordinates (×f for
// the decoder, //f for the encoder).
func splitTiles(h, w, tile, pad, f int, decoder bool) (in, out []box) {
	nh := max(ceilDiv(h-2*pad, tile), 1)
	nw := max(ceilDiv(w-2*pad, tile), 1)
	th := bestTileSize(ceilDiv(h-2*pad, nh), tile)
	tw := bestTileSize(ceilDiv(w-2*pad, nw), tile)
	scale := func(v int) int {
		if decoder {
			return v * f
		}
		return floorDiv(v, f)
	}
	for i := 0; i < nh; i++ {
		for j := 0; j < nw; j++ {
			core := box{pad + j*tw, min(pad+(j+1)*tw, w), pad + i*th, min(pad+(i+1)*th, h)}
			o := core
			if o.x0 <= pad {
				o.x0 = 0
			}
			if o.x1 >= w-pad {
				o.x1 = w
			}
			if o.y0 <= pad {
				o.y0 = 0
			}
			if o.y1 >= h-pad {
				o.y1 = h
			}
			out = append(out, box{scale(o.x0), scale(o.x1), scale(o.y0), scale(o.y1)})
			in = append(in, box{max(0, core.x0-pad), min(w, core.x1+pad), max(0, core.y0-pad), min(h, core.y1+pad)})
		}
	}
	return in, out
}

// pySlice resolves Python's a[lo:hi] on a dimension of length n to [lo, hi).
func pySlice(lo, hi, n int) (int, int) {
	norm := func(v int) int {
		if v < 0 {
			v += n
		}
		return min(max(v, 0), n)
	}
	lo, hi = norm(lo), norm(hi)
	return lo, max(hi, lo)
}

// tiledForward is vaehook's vae_tile_forward: cut x [N, C, H, W] into padded
// tiles, run them through fwd in lockstep, and paste each tile's valid region
// into a zero-initialised output [N, C', H·f or H//f, W·f or W//f].
// With spill.Above > 0, tiles are parked in temporary files between uses
// while those in memory would take more than that many bytes (see spiller);
// the result is the same.
func tiledForward(x *tensor.Tensor, tile, pad, f int, decoder bool, spill Spill, fwd func(Tiles) Tiles) *tensor.Tensor {
	n, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	in, out := splitTiles(h, w, tile, pad, f, decoder)
	sp := newSpiller(spill)
	// The activations' buffers follow a memory plan kept from the previous
	// call at these sizes (tensor.BeginPlan); it ends after sp.close (defers
	// run last first), which hands the last of them back.
	defer tensor.BeginPlan(fmt.Sprintf("vae.tiledForward %v tile %d pad %d f %d decoder %v", x.Shape(), tile, pad, f, decoder))()
	xs := make(Tiles, len(in))
	for i, b := range in {
		y0, y1 := pySlice(b.y0, b.y1, h)
		x0, x1 := pySlice(b.x0, b.x1, w)
		xs[i] = sp.adopt(x.Narrow(2, y0, y1-y0).Narrow(3, x0, x1-x0).Clone()) // [N, C, th, tw]
		park(xs[i])
	}
	defer sp.close()
	xs = fwd(xs)
	oh, ow := floorDiv(h, f), floorDiv(w, f)
	if decoder {
		oh, ow = h*f, w*f
	}
	res := tensor.New(n, xs[0].Dim(1), oh, ow) // [N, C', oh, ow]
	for i, t := range xs {
		xs[i] = nil
		load(t)
		release(t)
		// crop_valid_region: the output box relative to the scaled input box.
		p := in[i]
		ps := box{floorDiv(p.x0, f), floorDiv(p.x1, f), floorDiv(p.y0, f), floorDiv(p.y1, f)}
		if decoder {
			ps = box{p.x0 * f, p.x1 * f, p.y0 * f, p.y1 * f}
		}
		o := out[i]
		th, tw := t.Dim(2), t.Dim(3)
		cy0, cy1 := pySlice(o.y0-ps.y0, th+o.y1-ps.y1, th)
		cx0, cx1 := pySlice(o.x0-ps.x0, tw+o.x1-ps.x1, tw)
		dy0, dy1 := pySlice(o.y0, o.y1, oh)
		dx0, dx1 := pySlice(o.x0, o.x1, ow)
		if cy1-cy0 != dy1-dy0 || cx1-cx0 != dx1-dx0 {
			panic(fmt.Sprintf("vae: tile %d: valid region %dx%d does not fit output box %dx%d (input %dx%d, tile %d)",
				i, cy1-cy0, cx1-cx0, dy1-dy0, dx1-dx0, h, w, tile))
		}
		dst := res.Narrow(2, dy0, dy1-dy0).Narrow(3, dx0, dx1-dx0)
		dst.CopyFrom(t.Narrow(2, cy0, cy1-cy0).Narrow(3, cx0, cx1-cx0))
		tensor.Free(t.Storage()) // the tile's last use
		t.DropData()
	}
	return res
}
