package osediff

import (
	"context"
	"fmt"
	"math"

	"github.com/osediff-go/osediff/tensor"
)

// The UNet latent tiling of the reference (OSEDiff_test.forward): for a
// latent larger than latent_tiled_size² the UNet runs on square tiles and the
// outputs are blended with Gaussian weights.

// TileBox is one tile of the latent: columns [X, X+W), rows [Y, Y+H).
type TileBox struct{ X, Y, W, H int }

// LatentTiling is the tile geometry for one latent size.
type LatentTiling struct {
	Tile    int       // effective tile side: min(tileSize, min(h, w))
	Overlap int       // effective overlap (see NewLatentTiling)
	Boxes   []TileBox // in the reference's order: x index outer, y index inner
	// Weights is the Tile x Tile Gaussian blending mask, row-major
	// (Weights[y*Tile+x]), in float64 as the reference's numpy weights.
	Weights []float64
}

// NewLatentTiling computes the reference's tiling of an h x w latent:
// tile = min(tileSize, min(h, w)); along each axis the number of tiles n is
// the first for which max((n-1)*(tile-overlap), 0) + tile >= size; the
// offsets are i*(tile-overlap), the last one clamped to size-tile.
//
// When the shrunken tile is not larger than the overlap (a thin latent, e.g.
// 20 x 500 with the defaults 96/32) the reference's loop never ends; here the
// overlap is then reduced to tile/2.
func NewLatentTiling(h, w, tileSize, overlap int) (*LatentTiling, error) {
	if h <= 0 || w <= 0 {
		return nil, fmt.Errorf("osediff: latent tiling of an empty %dx%d latent", h, w)
	}
	if tileSize <= 0 || overlap < 0 {
		return nil, fmt.Errorf("osediff: latent tile %d / overlap %d invalid (tile > 0, overlap >= 0)", tileSize, overlap)
	}
	tile := min(tileSize, h, w)
	if overlap >= tile {
		overlap = tile / 2
	}
	xs := tileOffsets(w, tile, overlap)
	ys := tileOffsets(h, tile, overlap)
	lt := &LatentTiling{Tile: tile, Overlap: overlap, Weights: GaussianTileWeights(tile)}
	for _, x := range xs {
		for _, y := range ys {
			lt.Boxes = append(lt.Boxes, TileBox{X: x, Y: y, W: tile, H: tile})
		}
	}
	return lt, nil
}

// tileOffsets is one axis of the reference's grid (tile > overlap).
func tileOffsets(size, tile, overlap int) []int {
	n := 0
	for cur := 0; cur < size; n++ {
		cur = max(n*tile-overlap*n, 0) + tile
	}
	ofs := make([]int, n)
	for i := range ofs {
		ofs[i] = max(i*tile-overlap*i, 0)
	}
	ofs[n-1] = size - tile
	return ofs
}

// LatentTileBoxes lists the tiles of an h x w latent (see NewLatentTiling);
// nil for invalid arguments.
func LatentTileBoxes(h, w, tileSize, overlap int) []TileBox {
	lt, err := NewLatentTiling(h, w, tileSize, overlap)
	if err != nil {
		return nil
	}
	return lt.Boxes
}

// GaussianTileWeights is the reference's _gaussian_weights(t, t): w[y][x] =
// gy[y]*gx[x] with g(v) = exp(-(v-c)²/t²/(2·0.01)) / sqrt(2π·0.01), centre
// c = (t-1)/2 for x but t/2 for y, in float64.
func GaussianTileWeights(t int) []float64 {
	const variance = 0.01
	g := func(v int, mid float64) float64 {
		d := float64(v) - mid
		return math.Exp(-d*d/float64(t*t)/(2*variance)) / math.Sqrt(2*math.Pi*variance)
	}
	gx, gy := make([]float64, t), make([]float64, t)
	for i := 0; i < t; i++ {
		gx[i] = g(i, float64(t-1)/2)
		gy[i] = g(i, float64(t)/2)
	}
	w := make([]float64, t*t)
	for y := 0; y < t; y++ {
		for x := 0; x < t; x++ {
			w[y*t+x] = gy[y] * gx[x]
		}
	}
	return w
}

// Extract copies tile i of latent [N,C,h,w] into a new contiguous
// [N,C,Tile,Tile] tensor.
func (lt *LatentTiling) Extract(latent *tensor.Tensor, i int) *tensor.Tensor {
	b := lt.Boxes[i]
	return latent.Narrow(2, b.Y, b.H).Narrow(3, b.X, b.W).Contiguous()
}

// Blend stitches the per-tile outputs (in Boxes order, each [N,C,Tile,Tile])
// into an [n,c,h,w] result as the reference does: sum(w*out)/sum(w), the
// float64 products added into float32 buffers (torch's in-place add of a
// float64 tensor into a float32 one), then a float32 division.
func (lt *LatentTiling) Blend(outs []*tensor.Tensor, n, c, h, w int) (*tensor.Tensor, error) {
	if len(outs) != len(lt.Boxes) {
		return nil, fmt.Errorf("osediff: %d tile outputs for %d tiles", len(outs), len(lt.Boxes))
	}
	acc := tensor.New(n, c, h, w)
	contrib := make([]float32, h*w) // the same for every channel
	a := acc.Data()
	t := lt.Tile
	for i, b := range lt.Boxes {
		if s := outs[i].Shape(); !tensor.SameShape(s, []int{n, c, t, t}) {
			return nil, fmt.Errorf("osediff: tile %d output has shape %v, want %v", i, s, []int{n, c, t, t})
		}
		o := outs[i].Data()
		for y := 0; y < t; y++ {
			for x := 0; x < t; x++ {
				p := (b.Y+y)*w + b.X + x
				contrib[p] = float32(float64(contrib[p]) + lt.Weights[y*t+x])
			}
		}
		for nc := 0; nc < n*c; nc++ {
			dst := a[nc*h*w : (nc+1)*h*w]
			src := o[nc*t*t : (nc+1)*t*t]
			for y := 0; y < t; y++ {
				row := dst[(b.Y+y)*w+b.X : (b.Y+y)*w+b.X+t]
				wr := lt.Weights[y*t : (y+1)*t]
				for x := range row {
					row[x] = float32(float64(row[x]) + float64(float64(src[y*t+x])*wr[x])) // no fused multiply-add
				}
			}
		}
	}
	for nc := 0; nc < n*c; nc++ {
		dst := a[nc*h*w : (nc+1)*h*w]
		for i := range dst {
			dst[i] /= contrib[i]
		}
	}
	return acc, nil
}

// TiledUNet runs fn (the UNet on one latent tile, [N,C,Tile,Tile] in and
// out) over the reference's tiles of latent [N,C,h,w] and blends the outputs
// (NewLatentTiling, Blend). It always tiles: the caller decides, as the
// reference does, to run the UNet whole when h*w <= tileSize². progress, if
// not nil, is called after each tile with (done, total); ctx is checked
// before each tile.
func TiledUNet(ctx context.Context, latent *tensor.Tensor, tileSize, overlap int, progress func(done, total int), fn func(tile *tensor.Tensor) *tensor.Tensor) (*tensor.Tensor, error) {
	s := latent.Shape()
	if len(s) != 4 {
		return nil, fmt.Errorf("osediff: latent shape %v, want [N,C,h,w]", s)
	}
	lt, err := NewLatentTiling(s[2], s[3], tileSize, overlap)
	if err != nil {
		return nil, err
	}
	outs := make([]*tensor.Tensor, len(lt.Boxes))
	for i := range lt.Boxes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		outs[i] = fn(lt.Extract(latent, i))
		if outs[i] == nil {
			return nil, fmt.Errorf("osediff: tile %d: no UNet output", i)
		}
		if progress != nil {
			progress(i+1, len(lt.Boxes))
		}
	}
	return lt.Blend(outs, s[0], s[1], s[2], s[3])
}
