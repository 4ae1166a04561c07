package unet

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// Attention is diffusers' Attention with AttnProcessor semantics as SD uses
// it: to_q/to_k/to_v without bias, to_out.0 with bias, scale dim_head^-0.5,
// no mask. Self-attention when the context is nil, cross-attention otherwise.
type Attention struct {
	ToQ   *nn.Linear `weights:"to_q"`
	ToK   *nn.Linear `weights:"to_k"`
	ToV   *nn.Linear `weights:"to_v"`
	ToOut *nn.Linear `weights:"to_out.0"`
	Heads int
	Dim   int // per head
}

// NewAttention makes an unbound attention over queries of width queryDim and
// keys/values of width ctxDim (queryDim for self-attention).
func NewAttention(queryDim, ctxDim, heads, dimHead int) *Attention {
	inner := heads * dimHead
	return &Attention{
		ToQ:   nn.NewLinear(queryDim, inner, false),
		ToK:   nn.NewLinear(ctxDim, inner, false),
		ToV:   nn.NewLinear(ctxDim, inner, false),
		ToOut: nn.NewLinear(inner, queryDim, true),
		Heads: heads,
		Dim:   dimHead,
	}
}

// Forward maps x [N, Lq, queryDim] (and ctx [N, Lk, ctxDim], or nil for
// self-attention) to [N, Lq, queryDim].
func (a *Attention) Forward(x, ctx *tensor.Tensor) *tensor.Tensor {
	if ctx == nil {
		ctx = x
	}
	n, lq, lk, inner := x.Dim(0), x.Dim(1), ctx.Dim(1), a.Heads*a.Dim
	if ctx.Dim(0) != n {
		panic(fmt.Sprintf("unet.Attention: batch %d for queries, %d for context", n, ctx.Dim(0)))
	}
	q := a.ToQ.Forward(x)           // [N, Lq, heads·dim]
	k := a.ToK.Forward(ctx)         // [N, Lk, heads·dim]
	v := a.ToV.Forward(ctx)         // [N, Lk, heads·dim]
	o := tensor.Empty(n, lq, inner) // [N, Lq, heads·dim]
	kernels.Attention(kernels.AttentionParams{
		Batch: n, Heads: a.Heads, Lq: lq, Lk: lk, Dim: a.Dim,
		LdQ: inner, LdK: inner, LdV: inner, LdO: inner,
		Scale: float32(1 / math.Sqrt(float64(a.Dim))),
	}, q.Data(), k.Data(), v.Data(), o.Data()) // softmax(q·kᵀ·scale)·v per head
	return a.ToOut.Forward(o) // [N, Lq, queryDim]
}

// FeedForward is diffusers' FeedForward with activation_fn "geglu":
// net.0 = GEGLU (proj to [value | gate], value·GELU(gate)), net.2 = Linear.
type FeedForward struct {
	Proj *nn.Linear `weights:"net.0.proj"` // [2·inner, dim]
	Out  *nn.Linear `weights:"net.2"`      // [dim, inner]
}

// NewFeedForward makes an unbound GEGLU feed-forward with hidden width inner.
func NewFeedForward(dim, inner int) *FeedForward {
	return &FeedForward{Proj: nn.NewLinear(dim, 2*inner, true), Out: nn.NewLinear(inner, dim, true)}
}

// Forward maps [N, L, dim] to [N, L, dim].
func (f *FeedForward) Forward(x *tensor.Tensor) *tensor.Tensor {
	inner := f.Out.In
	p := f.Proj.Forward(x) // [N, L, 2·inner]
	rows := p.Numel() / (2 * inner)
	g := tensor.Empty(x.Dim(0), x.Dim(1), inner)   // [N, L, inner]
	kernels.GEGLU(p.Data(), g.Data(), rows, inner) // value·GELU(gate)
	return f.Out.Forward(g)                        // [N, L, dim]
}

// BasicTransformerBlock is diffusers' BasicTransformerBlock (layer_norm,
// not only_cross_attention): self-attention, cross-attention on the text
// states and a GEGLU feed-forward, each pre-LayerNorm with a residual.
type BasicTransformerBlock struct {
	Norm1 *nn.LayerNorm `weights:"norm1"`
	Attn1 *Attention    `weights:"attn1"`
	Norm2 *nn.LayerNorm `weights:"norm2"`
	Attn2 *Attention    `weights:"attn2"`
	Norm3 *nn.LayerNorm `weights:"norm3"`
	FF    *FeedForward  `weights:"ff"`
}

// NewBasicTransformerBlock makes an unbound block of width dim.
func NewBasicTransformerBlock(dim, heads, dimHead, crossDim int) *BasicTransformerBlock {
	return &BasicTransformerBlock{
		Norm1: nn.NewLayerNorm(dim, 1e-5),
		Attn1: NewAttention(dim, dim, heads, dimHead),
		Norm2: nn.NewLayerNorm(dim, 1e-5),
		Attn2: NewAttention(dim, crossDim, heads, dimHead),
		Norm3: nn.NewLayerNorm(dim, 1e-5),
		FF:    NewFeedForward(dim, 4*dim),
	}
}

// Forward updates x [N, L, dim] in place (and returns it) given the text
// states ctx [N, Lt, crossDim].
func (b *BasicTransformerBlock) Forward(x, ctx *tensor.Tensor) *tensor.Tensor {
	nn.AddInPlace(x, b.Attn1.Forward(b.Norm1.Forward(x), nil)) // [N, L, dim] self-attention
	nn.AddInPlace(x, b.Attn2.Forward(b.Norm2.Forward(x), ctx)) // [N, L, dim] cross-attention
	nn.AddInPlace(x, b.FF.Forward(b.Norm3.Forward(x)))         // [N, L, dim] feed-forward
	return x
}

// Transformer2DModel is diffusers' Transformer2DModel for continuous inputs
// with use_linear_projection: GroupNorm (eps 1e-6) → tokens → proj_in →
// BasicTransformerBlocks → proj_out → NCHW → + input.
type Transformer2DModel struct {
	Norm              *nn.GroupNorm           `weights:"norm"`
	ProjIn            *nn.Linear              `weights:"proj_in"` // [inner, C]
	TransformerBlocks []BasicTransformerBlock `weights:"transformer_blocks"`
	ProjOut           *nn.Linear              `weights:"proj_out"` // [C, inner]
	Channels          int
}

// NewTransformer2DModel makes an unbound transformer over ch channels with
// heads heads of width ch/heads.
func NewTransformer2DModel(ch, heads, layers, groups, crossDim int) *Transformer2DModel {
	dimHead := ch / heads
	inner := heads * dimHead
	t := &Transformer2DModel{
		Norm:     nn.NewGroupNorm(groups, ch, 1e-6),
		ProjIn:   nn.NewLinear(ch, inner, true),
		ProjOut:  nn.NewLinear(inner, ch, true),
		Channels: ch,
	}
	for range layers {
		t.TransformerBlocks = append(t.TransformerBlocks, *NewBasicTransformerBlock(inner, heads, dimHead, crossDim))
	}
	return t
}

// Forward maps x [N, C, H, W] to [N, C, H, W] given the text states ctx
// [N, Lt, crossDim]; x is left unchanged.
func (t *Transformer2DModel) Forward(x, ctx *tensor.Tensor) *tensor.Tensor {
	return t.forwardInPlace(x.Clone(), ctx)
}

// forwardInPlace is Forward adding the result into the residual x itself
// (contiguous, owned by the caller), which it returns. The NCHW↔token
// transposes are folded into the proj_in and proj_out GEMMs.
func (t *Transformer2DModel) forwardInPlace(x, ctx *tensor.Tensor) *tensor.Tensor {
	if x.Rank() != 4 || x.Dim(1) != t.Channels {
		panic(fmt.Sprintf("unet.Transformer2DModel: input %v, want [N, %d, H, W]", x.Shape(), t.Channels))
	}
	n, c, hw := x.Dim(0), t.Channels, x.Dim(2)*x.Dim(3)
	inner := t.ProjIn.Out
	h := t.Norm.Forward(x, false)     // [N, C, H, W]
	tok := tensor.Empty(n, hw, inner) // [N, HW, inner]
	for b := 0; b < n; b++ {          // tok_b = h_bᵀ · W_inᵀ
		kernels.SgemmMat(true, true, hw, inner, c, 1, kernels.F32(h.Data()[b*c*hw:]), hw, t.ProjIn.Mat(), c, 0, tok.Data()[b*hw*inner:], inner)
	}
	kernels.AddRowVector(tok.Data(), n*hw, inner, t.ProjIn.Bias.Data()) // [N, HW, inner]
	for i := range t.TransformerBlocks {
		tok = t.TransformerBlocks[i].Forward(tok, ctx) // [N, HW, inner]
	}
	for b := 0; b < n; b++ { // x_b += W_out · tok_bᵀ
		kernels.SgemmMat(false, true, c, hw, inner, 1, t.ProjOut.Mat(), inner, kernels.F32(tok.Data()[b*hw*inner:]), inner, 1, x.Data()[b*c*hw:], hw)
	}
	kernels.AddChannelVector(x.Data(), n, c, hw, t.ProjOut.Bias.Data()) // [N, C, H, W]
	return x
}
