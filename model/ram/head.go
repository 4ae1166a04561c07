package ram

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// BertModel is the Query2Label tagging head (bert_lora.py BertModel built
// from q2l_config.json) as RAM runs it in mode 'tagging': its embeddings and
// self-attention are deleted, so each layer is cross-attention from the
// label queries to the image embeddings, then the feed-forward block.
type BertModel struct {
	Encoder *BertEncoder `weights:"encoder"`
}

// BertEncoder is the stack of layers.
type BertEncoder struct {
	Layer []BertLayer `weights:"layer"`
}

// BertLayer is a post-LN BERT layer without self-attention.
type BertLayer struct {
	CrossAttention *BertAttention    `weights:"crossattention"`
	Intermediate   *BertIntermediate `weights:"intermediate"`
	Output         *BertOutput       `weights:"output"`
}

// BertAttention is attention plus its output block.
type BertAttention struct {
	Self   *BertSelfAttention `weights:"self"`
	Output *BertSelfOutput    `weights:"output"`
}

// BertSelfAttention holds the query (hidden -> hidden), key and value
// (encoder width -> hidden) projections; query and key carry the merged LoRA.
type BertSelfAttention struct {
	Query *nn.Linear `weights:"query"`
	Key   *nn.Linear `weights:"key"`
	Value *nn.Linear `weights:"value"`
	Heads int
}

// BertSelfOutput is LayerNorm(dense(x) + residual).
type BertSelfOutput struct {
	Dense     *nn.Linear    `weights:"dense"`
	LayerNorm *nn.LayerNorm `weights:"LayerNorm"`
}

// BertIntermediate is dense then exact GELU.
type BertIntermediate struct {
	Dense *nn.Linear `weights:"dense"`
}

// BertOutput is LayerNorm(dense(x) + residual).
type BertOutput struct {
	Dense     *nn.Linear    `weights:"dense"`
	LayerNorm *nn.LayerNorm `weights:"LayerNorm"`
}

// NewBertModel makes an unbound tagging head whose keys and values come from
// encoderWidth-wide embeddings.
func NewBertModel(c TaggingHeadConfig, encoderWidth int) *BertModel {
	h, eps := c.HiddenSize, float32(c.LayerNormEps)
	m := &BertModel{Encoder: &BertEncoder{Layer: make([]BertLayer, c.NumHiddenLayers)}}
	for i := range m.Encoder.Layer {
		m.Encoder.Layer[i] = BertLayer{
			CrossAttention: &BertAttention{
				Self: &BertSelfAttention{
					Query: nn.NewLinear(h, h, true),
					Key:   nn.NewLinear(encoderWidth, h, true),
					Value: nn.NewLinear(encoderWidth, h, true),
					Heads: c.NumAttentionHeads,
				},
				Output: &BertSelfOutput{Dense: nn.NewLinear(h, h, true), LayerNorm: nn.NewLayerNorm(h, eps)},
			},
			Intermediate: &BertIntermediate{Dense: nn.NewLinear(h, c.IntermediateSize, true)},
			Output:       &BertOutput{Dense: nn.NewLinear(c.IntermediateSize, h, true), LayerNorm: nn.NewLayerNorm(h, eps)},
		}
	}
	return m
}

// Forward maps the label queries q [K, H] and image embeddings e [T, E] to
// [K, H].
func (m *BertModel) Forward(q, e *tensor.Tensor) *tensor.Tensor { return m.forward(q, nil, e, nil) }

// forward is Forward; qp0, when not nil, is the first layer's query
// projection of q (Query.Forward(q)), made once for the fixed label queries.
func (m *BertModel) forward(q, qp0, e *tensor.Tensor, tap tapFunc) *tensor.Tensor {
	for i := range m.Encoder.Layer {
		var qp *tensor.Tensor
		if i == 0 {
			qp = qp0
		}
		q = m.Encoder.Layer[i].forward(q, qp, e, tap, fmt.Sprintf("tagging.layer%d.", i)) // [K, H]
	}
	return q
}

func (l *BertLayer) forward(q, qp, e *tensor.Tensor, tap tapFunc, name string) *tensor.Tensor {
	if qp == nil {
		qp = l.CrossAttention.Self.Query.Forward(q) // [K, H]
	}
	ctx := l.CrossAttention.Self.attend(qp, e) // [K, H]
	tap.emit(name+"cross_context", ctx)
	a := l.CrossAttention.Output.Forward(ctx, q) // [K, H]
	tap.emit(name+"cross_out", a)
	f := l.Intermediate.Forward(a) // [K, I]
	out := l.Output.Forward(f, a)  // [K, H]
	tap.emit(name+"out", out)
	return out
}

// Forward is softmax((q Wq)(e Wk)ᵀ/√d)(e Wv) per head, heads concatenated:
// q [K, H], e [T, E] -> [K, H]. No mask: every image token is attended.
func (s *BertSelfAttention) Forward(q, e *tensor.Tensor) *tensor.Tensor {
	return s.attend(s.Query.Forward(q), e) // [K, H]
}

// attend is Forward with the query projection qp = Query.Forward(q) given.
func (s *BertSelfAttention) attend(qp, e *tensor.Tensor) *tensor.Tensor {
	k := s.Key.Forward(e)   // [T, H]
	v := s.Value.Forward(e) // [T, H]
	h := qp.Dim(1)
	d := h / s.Heads
	out := tensor.Empty(qp.Dim(0), h) // [K, H], written in full
	kernels.Attention(kernels.AttentionParams{
		Batch: 1, Heads: s.Heads, Lq: qp.Dim(0), Lk: k.Dim(0), Dim: d,
		LdQ: h, LdK: h, LdV: h, LdO: h,
		Scale: float32(1 / math.Sqrt(float64(d))),
	}, qp.Data(), k.Data(), v.Data(), out.Data())
	return out
}

// Forward is LayerNorm(dense(x) + residual), x and residual [K, H].
func (o *BertSelfOutput) Forward(x, residual *tensor.Tensor) *tensor.Tensor {
	y := o.Dense.Forward(x)       // [K, H]
	nn.AddInPlace(y, residual)    // [K, H]
	return o.LayerNorm.Forward(y) // [K, H]
}

// Forward is GELU(dense(x)): [K, H] -> [K, I].
func (m *BertIntermediate) Forward(x *tensor.Tensor) *tensor.Tensor {
	y := m.Dense.Forward(x)          // [K, I]
	kernels.GELU(y.Data(), y.Data()) // [K, I]
	return y
}

// Forward is LayerNorm(dense(x) + residual): x [K, I], residual [K, H].
func (o *BertOutput) Forward(x, residual *tensor.Tensor) *tensor.Tensor {
	y := o.Dense.Forward(x)       // [K, H]
	nn.AddInPlace(y, residual)    // [K, H]
	return o.LayerNorm.Forward(y) // [K, H]
}
