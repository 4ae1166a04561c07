package vae

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// Tiles are the pieces of one activation that run through the network in
// lockstep, each [N, C, h_i, w_i]. An untiled forward is one tile.
type Tiles []*tensor.Tensor

// tiledNormGroups is the group count vaehook.py hard-codes for the GroupNorm
// it shares across tiles (whatever the layer's own num_groups).
const tiledNormGroups = 32

// normStats holds the shared per-(sample, group) statistics of a GroupNorm
// over several tiles, as vaehook's GroupNormParam.summary computes them.
type normStats struct {
	groups int
	mean   []float32 // [N*groups]
	invStd []float32 // [N*groups] 1/sqrt(var + eps)
}

// sharedStats returns the statistics all tiles normalise with, or nil for a
// single tile (which then uses the exact GroupNorm kernel). Per tile it takes
// the biased mean and variance of each (sample, group); the tiles' values are
// averaged with weights pixels_i/max(pixels) normalised to sum 1.
func sharedStats(xs Tiles, eps float32) *normStats {
	if len(xs) == 1 {
		return nil
	}
	n, c := xs[0].Dim(0), xs[0].Dim(1)
	g := tiledNormGroups
	if c%g != 0 {
		panic(fmt.Sprintf("vae: tiled GroupNorm needs channels divisible by %d, have %d", g, c))
	}
	maxPix := 0
	for _, x := range xs {
		maxPix = max(maxPix, x.Dim(2)*x.Dim(3))
	}
	weights := make([]float64, len(xs))
	var wsum float64
	for i, x := range xs {
		weights[i] = float64(x.Dim(2)*x.Dim(3)) / float64(maxPix)
		wsum += weights[i]
	}
	mean := make([]float64, n*g)
	variance := make([]float64, n*g)
	for i, x := range xs {
		m, v := parkedMoments(x)
		if m == nil {
			m, v = tileMoments(load(x))
			unload(x)
		}
		w := weights[i] / wsum
		for ng := range mean {
			mean[ng] += w * m[ng]
			variance[ng] += w * v[ng]
		}
	}
	st := &normStats{groups: g, mean: make([]float32, n*g), invStd: make([]float32, n*g)}
	for i := range mean {
		st.mean[i] = float32(mean[i])
		st.invStd[i] = float32(1 / math.Sqrt(float64(float32(variance[i]))+float64(eps)))
	}
	return st
}

// tileMoments returns the mean and biased variance of every (sample, group)
// of x [N, C, h, w] over tiledNormGroups groups.
func tileMoments(x *tensor.Tensor) (mean, variance []float64) {
	n, c := x.Dim(0), x.Dim(1)
	g := tiledNormGroups
	cnt := (c / g) * x.Dim(2) * x.Dim(3)
	data := x.Data()
	mean, variance = make([]float64, n*g), make([]float64, n*g)
	parallel.For(n*g, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			mean[ng], variance[ng] = kernels.Moments(data[ng*cnt : (ng+1)*cnt])
		}
	})
	return mean, variance
}

// applyNorm writes GroupNorm(x) (then SiLU when silu) into y, which may be x.
// With st nil it is exactly gn's own GroupNorm; otherwise it normalises with
// the shared statistics and then applies gn's affine weights.
func applyNorm(gn *nn.GroupNorm, st *normStats, x, y *tensor.Tensor, silu bool) {
	n, c := x.Dim(0), x.Dim(1)
	hw := x.Numel() / (n * c)
	if st == nil {
		kernels.GroupNorm(x.Data(), y.Data(), n, c, hw, gn.Groups, gn.Eps, gn.Weight.Data(), gn.Bias.Data(), silu)
		return
	}
	cpg := c / st.groups
	xd, yd := x.Data(), y.Data()
	gamma, beta := gn.Weight.Data(), gn.Bias.Data()
	parallel.For(n*c, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			b, ch := p/c, p%c
			k := b*st.groups + ch/cpg
			sc := st.invStd[k] * gamma[ch]
			sh := beta[ch] - st.mean[k]*sc
			src, dst := xd[p*hw:(p+1)*hw], yd[p*hw:(p+1)*hw]
			for i, v := range src {
				dst[i] = v*sc + sh
			}
			if silu {
				kernels.SiLU(dst, dst)
			}
		}
	})
}

// normAffine returns the per-channel transform of applyNorm(gn, st, x, ·,
// silu), to fuse into a convolution: gn's own GroupNorm for a single tile
// (st nil), else the shared statistics and gn's affine weights.
func normAffine(gn *nn.GroupNorm, st *normStats, x *tensor.Tensor, silu bool) *kernels.ChannelAffine {
	if st == nil {
		return gn.Affine(x, silu)
	}
	n, c := x.Dim(0), x.Dim(1)
	cpg := c / st.groups
	gamma, beta := gn.Weight.Data(), gn.Bias.Data()
	a := &kernels.ChannelAffine{Scale: make([]float32, n*c), Shift: make([]float32, n*c), SiLU: silu}
	for p := 0; p < n*c; p++ {
		b, ch := p/c, p%c
		k := b*st.groups + ch/cpg
		sc := st.invStd[k] * gamma[ch]
		a.Scale[p], a.Shift[p] = sc, beta[ch]-st.mean[k]*sc
	}
	return a
}
