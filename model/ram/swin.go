package ram

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// tapFunc receives named intermediates (golden tests); nil means no tap.
type tapFunc func(name string, t *tensor.Tensor)

func (f tapFunc) emit(name string, t *tensor.Tensor) {
	if f != nil {
		f(name, t)
	}
}

// SwinTransformer is the RAM image encoder (swin_transformer_lora.py
// SwinTransformer, no absolute position embedding, no classifier head): it
// returns the final-norm tokens with their mean prepended.
type SwinTransformer struct {
	PatchEmbed *PatchEmbed   `weights:"patch_embed"`
	Layers     []BasicLayer  `weights:"layers"`
	Norm       *nn.LayerNorm `weights:"norm"`
	InputSize  int
}

// NewSwinTransformer makes an unbound encoder for cfg.
func NewSwinTransformer(cfg Config) *SwinTransformer {
	st := cfg.stages()
	s := &SwinTransformer{
		PatchEmbed: &PatchEmbed{
			Proj:  nn.NewConv2d(3, cfg.EmbedDim, cfg.PatchSize, cfg.PatchSize, 0, true),
			Norm:  nn.NewLayerNorm(cfg.EmbedDim, swinEps),
			Patch: cfg.PatchSize,
		},
		Layers:    make([]BasicLayer, len(st)),
		Norm:      nn.NewLayerNorm(cfg.VisionWidth, swinEps),
		InputSize: cfg.InputSize,
	}
	for i, g := range st {
		l := BasicLayer{Blocks: make([]SwinTransformerBlock, g.Depth)}
		for j := range l.Blocks {
			shift := 0
			if j%2 == 1 {
				shift = g.Shift
			}
			l.Blocks[j] = *newSwinTransformerBlock(g.Res, g.Dim, g.Heads, g.Window, shift, cfg.MLPRatio)
		}
		if i < len(st)-1 {
			l.Downsample = &PatchMerging{
				Norm:      nn.NewLayerNorm(4*g.Dim, swinEps),
				Reduction: nn.NewLinear(4*g.Dim, 2*g.Dim, false),
				Res:       g.Res,
				Dim:       g.Dim,
			}
		}
		s.Layers[i] = l
	}
	return s
}

// Forward maps the normalised image x [1, 3, S, S] to [1+L, C]: the mean of
// the L last-stage tokens, then the tokens.
func (s *SwinTransformer) Forward(x *tensor.Tensor) *tensor.Tensor { return s.forward(x, nil) }

func (s *SwinTransformer) forward(x *tensor.Tensor, tap tapFunc) *tensor.Tensor {
	if x.Rank() != 4 || x.Dim(0) != 1 || x.Dim(1) != 3 || x.Dim(2) != s.InputSize || x.Dim(3) != s.InputSize {
		panic(fmt.Sprintf("ram.SwinTransformer: input %v, want [1, 3, %d, %d]", x.Shape(), s.InputSize, s.InputSize))
	}
	h := s.PatchEmbed.Forward(x) // [G*G, C0]
	tap.emit("swin.patch_embed", h)
	for i := range s.Layers {
		l := &s.Layers[i]
		for j := range l.Blocks {
			h = l.Blocks[j].Forward(h) // [R*R, C]
			tap.emit(fmt.Sprintf("swin.stage%d.block%d", i, j), h)
		}
		if l.Downsample != nil {
			h = l.Downsample.Forward(h) // [(R/2)^2, 2C]
			tap.emit(fmt.Sprintf("swin.stage%d.downsample", i), h)
		}
	}
	h = s.Norm.Forward(h) // [L, C]
	tap.emit("swin.final_norm", h)
	out := prependMean(h) // [1+L, C]
	tap.emit("swin.output", out)
	return out
}

// prependMean returns [1+L, C]: the mean over the L rows of x [L, C]
// (AdaptiveAvgPool1d over tokens), then x.
func prependMean(x *tensor.Tensor) *tensor.Tensor {
	l, c := x.Dim(0), x.Dim(1)
	out := tensor.Empty(1+l, c) // [1+L, C], written in full
	od, xd := out.Data(), x.Data()
	for ch := 0; ch < c; ch++ {
		var sum float64
		for t := 0; t < l; t++ {
			sum += float64(xd[t*c+ch])
		}
		od[ch] = float32(sum / float64(l))
	}
	copy(od[c:], xd)
	return out
}

// PatchEmbed is a Conv2d(3, C, p, stride p) over the image, tokens in
// row-major order, then LayerNorm (patch_norm=True).
type PatchEmbed struct {
	Proj  *nn.Conv2d    `weights:"proj"`
	Norm  *nn.LayerNorm `weights:"norm"`
	Patch int
}

// Forward maps x [1, 3, S, S] to [(S/p)^2, C].
func (p *PatchEmbed) Forward(x *tensor.Tensor) *tensor.Tensor {
	y := p.Proj.Forward(x)                                  // [1, C, G, G]
	t := y.Reshape(y.Dim(1), -1).Permute(1, 0).Contiguous() // [G*G, C] tokens row-major
	return p.Norm.Forward(t)                                // [G*G, C]
}

// BasicLayer is one Swin stage: its blocks, then PatchMerging except after
// the last stage.
type BasicLayer struct {
	Blocks     []SwinTransformerBlock `weights:"blocks"`
	Downsample *PatchMerging          `weights:"downsample"` // nil on the last stage
}

// SwinTransformerBlock is a pre-LN Swin block: (shifted) window attention,
// then the MLP, each with a residual. Res is the grid side, Window the
// effective window, Shift the cyclic shift (0 for W-MSA).
type SwinTransformerBlock struct {
	Norm1 *nn.LayerNorm    `weights:"norm1"`
	Attn  *WindowAttention `weights:"attn"`
	Norm2 *nn.LayerNorm    `weights:"norm2"`
	MLP   *Mlp             `weights:"mlp"`

	Res, Window, Shift int
	perm               []int32 // window-major row i reads token perm[i] (roll by -Shift, then partition)
	region             []int8  // per window-major row: shifted-window region id; nil when Shift == 0
}

func newSwinTransformerBlock(res, dim, heads, window, shift int, mlpRatio float64) *SwinTransformerBlock {
	hidden := int(float64(dim) * mlpRatio)
	b := &SwinTransformerBlock{
		Norm1: nn.NewLayerNorm(dim, swinEps),
		Attn: &WindowAttention{
			RelativePositionBiasTable: tensor.Shaped((2*window-1)*(2*window-1), heads),
			QKV:                       nn.NewLinear(dim, 3*dim, true),
			Proj:                      nn.NewLinear(dim, dim, true),
			Dim:                       dim,
			Heads:                     heads,
			Window:                    window,
			relIndex:                  relativePositionIndex(window),
		},
		Norm2:  nn.NewLayerNorm(dim, swinEps),
		MLP:    &Mlp{FC1: nn.NewLinear(dim, hidden, true), FC2: nn.NewLinear(hidden, dim, true)},
		Res:    res,
		Window: window,
		Shift:  shift,
	}
	b.perm, b.region = windowLayout(res, window, shift)
	return b
}

// windowLayout returns, for each row of the window-major layout (window
// (wr, wc) in row-major order over the window grid, then the w*w positions
// in row-major order), the token it reads after the cyclic roll by -shift,
// and, when shift > 0, its region label for the -100 mask: in the rolled
// frame, rows and columns fall in the bands [0, R-w), [R-w, R-s), [R-s, R),
// and region = 3*rowBand + colBand.
func windowLayout(res, w, shift int) ([]int32, []int8) {
	nw := res / w
	perm := make([]int32, res*res)
	var region []int8
	if shift > 0 {
		region = make([]int8, res*res)
	}
	band := func(v int) int {
		switch {
		case v < res-w:
			return 0
		case v < res-shift:
			return 1
		}
		return 2
	}
	i := 0
	for wr := 0; wr < nw; wr++ {
		for wc := 0; wc < nw; wc++ {
			for pr := 0; pr < w; pr++ {
				for pc := 0; pc < w; pc++ {
					r, c := wr*w+pr, wc*w+pc // rolled frame
					perm[i] = int32(((r+shift)%res)*res + (c+shift)%res)
					if region != nil {
						region[i] = int8(3*band(r) + band(c))
					}
					i++
				}
			}
		}
	}
	return perm, region
}

// Forward maps x [R*R, C] to [R*R, C].
func (b *SwinTransformerBlock) Forward(x *tensor.Tensor) *tensor.Tensor {
	c := x.Dim(1)
	h := b.Norm1.Forward(x)                       // [R*R, C]
	xw := gatherRows(h, b.perm)                   // [nW*N, C] window-major, rolled by -Shift
	a := b.Attn.Forward(xw, b.region)             // [nW*N, C]
	y := x.Clone()                                // [R*R, C] residual stream
	scatterAddRows(y.Data(), a.Data(), b.perm, c) // y[perm[i]] += a[i]: windows back, roll by +Shift
	m := b.MLP.Forward(b.Norm2.Forward(y))        // [R*R, C]
	return nn.AddInPlace(y, m)                    // [R*R, C]
}

// gatherRows returns out[i] = x[perm[i]] for x [L, C].
func gatherRows(x *tensor.Tensor, perm []int32) *tensor.Tensor {
	c := x.Dim(1)
	out := tensor.Empty(len(perm), c) // written in full (perm is a permutation)
	xd, od := x.Data(), out.Data()
	for i, p := range perm {
		copy(od[i*c:(i+1)*c], xd[int(p)*c:(int(p)+1)*c])
	}
	return out
}

func scatterAddRows(dst, src []float32, perm []int32, c int) {
	for i, p := range perm {
		d := dst[int(p)*c : (int(p)+1)*c]
		kernels.Add(d, d, src[i*c:(i+1)*c])
	}
}

// Mlp is fc1, exact GELU, fc2.
type Mlp struct {
	FC1 *nn.Linear `weights:"fc1"`
	FC2 *nn.Linear `weights:"fc2"`
}

// Forward maps x [L, C] to [L, C].
func (m *Mlp) Forward(x *tensor.Tensor) *tensor.Tensor {
	h := m.FC1.Forward(x)            // [L, hidden]
	kernels.GELU(h.Data(), h.Data()) // [L, hidden]
	return m.FC2.Forward(h)          // [L, C]
}

// WindowAttention is multi-head self-attention inside each window with a
// learned relative position bias (the qkv weight carries the merged LoRA).
type WindowAttention struct {
	RelativePositionBiasTable *tensor.Tensor `weights:"relative_position_bias_table"` // [(2w-1)^2, heads]
	QKV                       *nn.Linear     `weights:"qkv"`                          // C -> 3C
	Proj                      *nn.Linear     `weights:"proj"`                         // C -> C

	Dim, Heads, Window int
	relIndex           []int32 // [N*N] table row of (p, p'), N = w*w
}

// relativePositionIndex is the reference's relative_position_index buffer:
// (dy + w-1)*(2w-1) + (dx + w-1) for positions p, p' of a w×w window with
// dy = row(p) - row(p'), dx = col(p) - col(p').
func relativePositionIndex(w int) []int32 {
	n := w * w
	idx := make([]int32, n*n)
	for p := 0; p < n; p++ {
		for q := 0; q < n; q++ {
			dy, dx := p/w-q/w, p%w-q%w
			idx[p*n+q] = int32((dy+w-1)*(2*w-1) + dx + w - 1)
		}
	}
	return idx
}

// Forward maps the window-major tokens x [nW*N, C] to [nW*N, C]. region
// (nil for W-MSA) labels each row; scores between rows of different regions
// of a window get -100 (the shifted-window attn_mask).
func (a *WindowAttention) Forward(x *tensor.Tensor, region []int8) *tensor.Tensor {
	c, heads := a.Dim, a.Heads
	d := c / heads
	n := a.Window * a.Window
	nw := x.Dim(0) / n
	scale := float32(1 / math.Sqrt(float64(d)))
	qkv := a.QKV.Forward(x)          // [nW*N, 3C]: q | k | v, head h at columns h*d
	ctx := tensor.Empty(x.Dim(0), c) // written in full, a window and head at a time
	qd, cd := qkv.Data(), ctx.Data()
	table := a.RelativePositionBiasTable.Data()
	parallel.For(nw*heads, 1, func(lo, hi int) {
		s := make([]float32, n*n)
		for t := lo; t < hi; t++ {
			win, h := t/heads, t%heads
			base := win * n * 3 * c
			q, k, v := qd[base+h*d:], qd[base+c+h*d:], qd[base+2*c+h*d:]
			kernels.Sgemm(false, true, n, n, d, scale, q, 3*c, k, 3*c, 0, s, n) // (q·scale)kᵀ [N, N]
			for i, r := range a.relIndex {
				s[i] += table[int(r)*heads+h] // + relative position bias
			}
			if region != nil {
				reg := region[win*n : (win+1)*n]
				for i := 0; i < n; i++ {
					row := s[i*n : (i+1)*n]
					for j := range row {
						if reg[i] != reg[j] {
							row[j] += -100 // shifted-window mask
						}
					}
				}
			}
			kernels.Softmax(s, n, n)
			kernels.Sgemm(false, false, n, d, n, 1, s, n, v, 3*c, 0, cd[win*n*c+h*d:], c) // P·v [N, d]
		}
	})
	return a.Proj.Forward(ctx) // [nW*N, C]
}

// PatchMerging concatenates each 2×2 neighbourhood as [x(2i,2j), x(2i+1,2j),
// x(2i,2j+1), x(2i+1,2j+1)] (x0, x1, x2, x3 of the reference), then
// LayerNorm(4C) and a bias-free Linear(4C, 2C).
type PatchMerging struct {
	Norm      *nn.LayerNorm `weights:"norm"`
	Reduction *nn.Linear    `weights:"reduction"`
	Res, Dim  int
}

// Forward maps x [R*R, C] to [(R/2)^2, 2C].
func (m *PatchMerging) Forward(x *tensor.Tensor) *tensor.Tensor {
	r, c := m.Res, m.Dim
	h := r / 2
	cat := tensor.Empty(h*h, 4*c) // [(R/2)^2, 4C], written in full
	xd, od := x.Data(), cat.Data()
	for i := 0; i < h; i++ {
		for j := 0; j < h; j++ {
			dst := od[(i*h+j)*4*c:]
			for part, off := range [4][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
				src := ((2*i+off[0])*r + 2*j + off[1]) * c
				copy(dst[part*c:(part+1)*c], xd[src:src+c])
			}
		}
	}
	return m.Reduction.Forward(m.Norm.Forward(cat)) // [(R/2)^2, 2C]
}
