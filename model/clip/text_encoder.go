package clip

import (
	"fmt"
	"math"
	"path/filepath"
	"sync"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// CLIPTextModel is transformers' CLIPTextModel; its weights are the keys
// "text_model.*" of text_encoder/model.safetensors.
type CLIPTextModel struct {
	TextModel *CLIPTextTransformer `weights:"text_model"`
	Config    Config               `weights:"-"`
}

// CLIPTextTransformer holds the embeddings, the encoder and the final norm.
type CLIPTextTransformer struct {
	Embeddings     *CLIPTextEmbeddings `weights:"embeddings"`
	Encoder        *CLIPEncoder        `weights:"encoder"`
	FinalLayerNorm *nn.LayerNorm       `weights:"final_layer_norm"`
}

// CLIPTextEmbeddings adds learned position embeddings to token embeddings.
type CLIPTextEmbeddings struct {
	TokenEmbedding    *nn.Embedding `weights:"token_embedding"`    // [vocab, hidden]
	PositionEmbedding *nn.Embedding `weights:"position_embedding"` // [max_positions, hidden]
}

// CLIPEncoder is the stack of pre-LN transformer layers.
type CLIPEncoder struct {
	Layers []CLIPEncoderLayer `weights:"layers"`
}

// CLIPEncoderLayer is x + attn(ln1(x)), then x + mlp(ln2(x)).
type CLIPEncoderLayer struct {
	SelfAttn   *CLIPAttention `weights:"self_attn"`
	LayerNorm1 *nn.LayerNorm  `weights:"layer_norm1"`
	MLP        *CLIPMLP       `weights:"mlp"`
	LayerNorm2 *nn.LayerNorm  `weights:"layer_norm2"`
}

// CLIPAttention is causal multi-head self-attention.
type CLIPAttention struct {
	QProj   *nn.Linear `weights:"q_proj"`
	KProj   *nn.Linear `weights:"k_proj"`
	VProj   *nn.Linear `weights:"v_proj"`
	OutProj *nn.Linear `weights:"out_proj"`
	Heads   int
	HeadDim int
}

// CLIPMLP is fc1 -> activation -> fc2.
type CLIPMLP struct {
	FC1       *nn.Linear `weights:"fc1"`
	FC2       *nn.Linear `weights:"fc2"`
	QuickGELU bool       // hidden_act "quick_gelu" (else exact GELU)
}

// New makes an unbound CLIPTextModel for cfg (cfg must Validate; New panics
// otherwise). Bind it with checkpoint.Bind and BindOptions, or use Load.
func New(cfg Config) *CLIPTextModel {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	d, eps := cfg.HiddenSize, float32(cfg.LayerNormEps)
	enc := &CLIPEncoder{Layers: make([]CLIPEncoderLayer, cfg.NumHiddenLayers)}
	for i := range enc.Layers {
		enc.Layers[i] = CLIPEncoderLayer{
			SelfAttn: &CLIPAttention{
				QProj:   nn.NewLinear(d, d, true),
				KProj:   nn.NewLinear(d, d, true),
				VProj:   nn.NewLinear(d, d, true),
				OutProj: nn.NewLinear(d, d, true),
				Heads:   cfg.NumAttentionHeads,
				HeadDim: cfg.HeadDim(),
			},
			LayerNorm1: nn.NewLayerNorm(d, eps),
			MLP: &CLIPMLP{
				FC1:       nn.NewLinear(d, cfg.IntermediateSize, true),
				FC2:       nn.NewLinear(cfg.IntermediateSize, d, true),
				QuickGELU: cfg.HiddenAct == "quick_gelu",
			},
			LayerNorm2: nn.NewLayerNorm(d, eps),
		}
	}
	return &CLIPTextModel{
		TextModel: &CLIPTextTransformer{
			Embeddings: &CLIPTextEmbeddings{
				TokenEmbedding:    nn.NewEmbedding(cfg.VocabSize, d),
				PositionEmbedding: nn.NewEmbedding(cfg.MaxPositionEmbeddings, d),
			},
			Encoder:        enc,
			FinalLayerNorm: nn.NewLayerNorm(d, eps),
		},
		Config: cfg,
	}
}

// BindOptions are the options that bind text_encoder/model.safetensors: the
// position_ids buffer that transformers saves is known to be unused.
func BindOptions() checkpoint.BindOptions {
	return checkpoint.BindOptions{Ignore: []string{"text_model.embeddings.position_ids"}}
}

// Load builds and binds the text encoder of a diffusers text_encoder/ folder
// (config.json and model.safetensors).
func Load(dir string) (*CLIPTextModel, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	st, err := checkpoint.OpenSafetensors(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m := New(cfg)
	if _, err := checkpoint.Bind(m, st, BindOptions()); err != nil {
		return nil, fmt.Errorf("clip: %s: %w", dir, err)
	}
	return m, nil
}

// Forward encodes token ids (at most max_position_embeddings of them, each
// below vocab_size; it panics otherwise) into the last_hidden_state
// [1, len(ids), hidden].
func (m *CLIPTextModel) Forward(ids []int) *tensor.Tensor {
	h := m.TextModel.Forward(ids) // [L, D]
	return h.Reshape(1, h.Dim(0), h.Dim(1))
}

// Forward maps ids to the final-norm states [L, D].
func (t *CLIPTextTransformer) Forward(ids []int) *tensor.Tensor {
	h := t.Embeddings.Forward(ids) // [L, D]
	for i := range t.Encoder.Layers {
		h = t.Encoder.Layers[i].Forward(h) // [L, D]
	}
	return t.FinalLayerNorm.Forward(h) // [L, D]
}

// Forward is token_embedding(ids) + position_embedding(0..L-1).
func (e *CLIPTextEmbeddings) Forward(ids []int) *tensor.Tensor {
	maxPos := e.PositionEmbedding.Weight.Dim(0)
	if len(ids) == 0 || len(ids) > maxPos {
		panic(fmt.Sprintf("clip: %d token ids, want 1..%d", len(ids), maxPos))
	}
	x := e.TokenEmbedding.Forward(ids) // [L, D]
	pos := make([]int, len(ids))
	for i := range pos {
		pos[i] = i
	}
	p := e.PositionEmbedding.Forward(pos)     // [L, D]
	kernels.Add(x.Data(), x.Data(), p.Data()) // [L, D] + positions
	return x
}

// Forward is one pre-LN block on x [L, D].
func (l *CLIPEncoderLayer) Forward(x *tensor.Tensor) *tensor.Tensor {
	h := l.LayerNorm1.Forward(x) // [L, D]
	h = l.SelfAttn.Forward(h)    // [L, D]
	x = nn.AddInPlace(h, x)      // [L, D] residual
	h = l.LayerNorm2.Forward(x)  // [L, D]
	h = l.MLP.Forward(h)         // [L, D]
	return nn.AddInPlace(h, x)   // [L, D] residual
}

// Forward is causal self-attention on x [L, D].
func (a *CLIPAttention) Forward(x *tensor.Tensor) *tensor.Tensor {
	q := linear(a.QProj, x) // [L, D], head h in columns h*HeadDim..
	k := linear(a.KProj, x) // [L, D]
	v := linear(a.VProj, x) // [L, D]
	seq, d := x.Dim(0), x.Dim(1)
	o := tensor.New(seq, d) // [L, D]
	kernels.Attention(kernels.AttentionParams{
		Batch: 1, Heads: a.Heads, Lq: seq, Lk: seq, Dim: a.HeadDim,
		LdQ: d, LdK: d, LdV: d, LdO: d,
		Scale:  float32(1 / math.Sqrt(float64(a.HeadDim))),
		Causal: true,
	}, q.Data(), k.Data(), v.Data(), o.Data())
	return linear(a.OutProj, o) // [L, D]
}

// Forward is fc2(act(fc1(x))) on x [L, D].
func (m *CLIPMLP) Forward(x *tensor.Tensor) *tensor.Tensor {
	h := linear(m.FC1, x) // [L, I]
	if m.QuickGELU {
		kernels.QuickGELU(h.Data(), h.Data()) // [L, I]
	} else {
		kernels.GELU(h.Data(), h.Data()) // [L, I]
	}
	return linear(m.FC2, h) // [L, D]
}

// scratch holds the transposed products of linear between calls.
var scratch = sync.Pool{New: func() any { return new([]float32) }}

// linearChunk is the number of output features linear computes per GEMM, so
// that the transposed block [linearChunk, L] stays in L2 until it is
// transposed into place.
const linearChunk = 128

// linear is l.Forward for the few rows (tokens) of a prompt, computed as
// (W·xᵀ)ᵀ block by block of output features: the GEMM then reads the weight
// [Out, In] in place as its row-major A operand and packs only xᵀ, where
// x·Wᵀ would repack the whole weight on every call for just L <= 77 rows of
// use.
func linear(l *nn.Linear, x *tensor.Tensor) *tensor.Tensor {
	if x.Dim(-1) != l.In {
		panic(fmt.Sprintf("clip: linear input %v, want last dim %d", x.Shape(), l.In))
	}
	x = x.Contiguous()
	rows, in, out := x.Numel()/l.In, l.In, l.Out
	y := tensor.New(rows, out) // [L, Out]
	xd, yd, w := x.Data(), y.Data(), l.Mat()
	var bias []float32
	if l.Bias != nil {
		bias = l.Bias.Data()
	}
	parallel.For((out+linearChunk-1)/linearChunk, 1, func(lo, hi int) {
		buf := scratch.Get().(*[]float32)
		defer scratch.Put(buf)
		if cap(*buf) < linearChunk*rows {
			*buf = make([]float32, linearChunk*rows)
		}
		yt := (*buf)[:linearChunk*rows]
		for c := lo; c < hi; c++ {
			o0, o1 := c*linearChunk, min((c+1)*linearChunk, out)
			// yt [o1-o0, L] = W[o0:o1] · xᵀ (serial: we are inside parallel.For)
			kernels.SgemmMat(false, true, o1-o0, rows, in, 1, w.Slice(o0*in, o1*in), in, kernels.F32(xd), in, 0, yt, rows)
			for r := 0; r < rows; r++ {
				dst := yd[r*out+o0 : r*out+o1] // y[r, o0:o1] = ytᵀ (+ bias)
				for j := range dst {
					dst[j] = yt[j*rows+r]
				}
				if bias != nil {
					for j, b := range bias[o0:o1] {
						dst[j] += b
					}
				}
			}
		}
	})
	return y
}
