package ram

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// RAMLora holds the weights the tagger uses, under their checkpoint names
// (ram_lora.py RAMLora; tag_encoder and text_decoder are not part of
// tagging and are left out).
type RAMLora struct {
	VisualEncoder *SwinTransformer `weights:"visual_encoder"`
	ImageProj     *nn.Linear       `weights:"image_proj"`   // vision_width -> label_embed_dim
	LabelEmbed    *tensor.Tensor   `weights:"label_embed"`  // [num_classes, label_embed_dim]
	WordvecProj   *nn.Linear       `weights:"wordvec_proj"` // label_embed_dim -> hidden
	TaggingHead   *BertModel       `weights:"tagging_head"`
	FC            *nn.Linear       `weights:"fc"` // hidden -> 1
}

// NewRAMLora makes an unbound model for cfg (call cfg.Validate first).
func NewRAMLora(cfg Config) *RAMLora {
	h := cfg.TaggingHead.HiddenSize
	return &RAMLora{
		VisualEncoder: NewSwinTransformer(cfg),
		ImageProj:     nn.NewLinear(cfg.VisionWidth, cfg.LabelEmbedDim, true),
		LabelEmbed:    tensor.Shaped(cfg.NumClasses, cfg.LabelEmbedDim),
		WordvecProj:   nn.NewLinear(cfg.LabelEmbedDim, h, true),
		TaggingHead:   NewBertModel(cfg.TaggingHead, cfg.LabelEmbedDim),
		FC:            nn.NewLinear(h, 1, true),
	}
}

// ImageEmbeds maps the pre-processed input x [1, 3, S, S] to image_proj of
// the Swin output, [1+L, label_embed_dim].
func (m *RAMLora) ImageEmbeds(x *tensor.Tensor) *tensor.Tensor { return m.imageEmbeds(x, nil) }

func (m *RAMLora) imageEmbeds(x *tensor.Tensor, tap tapFunc) *tensor.Tensor {
	v := m.VisualEncoder.forward(x, tap) // [1+L, vision_width]
	e := m.ImageProj.Forward(v)          // [1+L, 512]
	tap.emit("image_embeds", e)
	return e
}

// LabelQueries is relu(wordvec_proj(label_embed)), the tagging-head input
// [num_classes, hidden]; it does not depend on the image.
func (m *RAMLora) LabelQueries() *tensor.Tensor {
	q := m.WordvecProj.Forward(m.LabelEmbed) // [K, H]
	d := q.Data()
	for i, v := range d {
		d[i] = max(v, 0) // relu
	}
	return q
}

// Logits maps the label queries q [K, H] and image embeddings e [T, E] to
// one logit per class [K].
func (m *RAMLora) Logits(q, e *tensor.Tensor) []float32 { return m.logits(q, nil, e, nil) }

// logits is Logits with the tagging head's first query projection of q
// given (qp0, or nil: computed).
func (m *RAMLora) logits(q, qp0, e *tensor.Tensor, tap tapFunc) []float32 {
	h := m.TaggingHead.forward(q, qp0, e, tap) // [K, H]
	return m.FC.Forward(h).Data()              // [K, 1] -> [K]
}

// Tagger runs DAPE: the loaded model, its configuration, the label queries
// (computed once) and the embedded tag names and thresholds. Tag only reads
// the Tagger, so concurrent calls are safe.
type Tagger struct {
	Model  *RAMLora
	Config Config

	queries *tensor.Tensor // [K, H] relu(wordvec_proj(label_embed))
	// The tagging head's first query projection of the queries [K, H]:
	// like them, the same for every image (30 ms of a 1.9 s tag at 384²).
	query0     *tensor.Tensor
	tags       []string
	thresholds []float32
}

// Result is the outcome of tagging one image.
type Result struct {
	Tags    []string  // names of the fired tags, in class-index order
	Indices []int     // their class indices
	Scores  []float32 // sigmoid(logit) per class [num_classes]
	Logits  []float32 // per class [num_classes]
}

// NewTagger wraps a bound model (from Load, or checkpoint.RandomInit for
// benchmarks). cfg.NumClasses must equal the embedded tag list's length.
func NewTagger(m *RAMLora, cfg Config) (*Tagger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ram: %w", err)
	}
	tags, th := embedded()
	if cfg.NumClasses != len(tags) {
		return nil, fmt.Errorf("ram: num_classes %d, but the embedded tag list has %d tags", cfg.NumClasses, len(tags))
	}
	if m == nil || !m.LabelEmbed.HasData() {
		return nil, fmt.Errorf("ram: model is not bound")
	}
	t := &Tagger{Model: m, Config: cfg, queries: m.LabelQueries(), tags: tags, thresholds: th}
	if ls := m.TaggingHead.Encoder.Layer; len(ls) > 0 {
		t.query0 = ls[0].CrossAttention.Self.Query.Forward(t.queries) // [K, H]
	}
	return t, nil
}

// Tag tags img [1, 3, H, W] (RGB in [0, 1]): resize to the input size,
// normalise, run the model, and keep each tag whose score beats its
// threshold.
func (t *Tagger) Tag(img *tensor.Tensor) (Result, error) { return t.tag(img, nil) }

func (t *Tagger) tag(img *tensor.Tensor, tap tapFunc) (Result, error) {
	x, err := Preprocess(img, t.Config.InputSize) // [1, 3, S, S]
	if err != nil {
		return Result{}, err
	}
	tap.emit("input", x)
	e := t.Model.imageEmbeds(x, tap)                      // [1+L, 512]
	logits := t.Model.logits(t.queries, t.query0, e, tap) // [K]
	return t.decide(logits), nil
}

// decide applies sigmoid and the per-class thresholds (strict >, float32).
func (t *Tagger) decide(logits []float32) Result {
	r := Result{Logits: logits, Scores: make([]float32, len(logits))}
	for i, l := range logits {
		s := float32(1 / (1 + math.Exp(-float64(l))))
		r.Scores[i] = s
		if s > t.thresholds[i] {
			r.Indices = append(r.Indices, i)
			r.Tags = append(r.Tags, t.tags[i])
		}
	}
	return r
}

// FLOPs is the floating-point work (2 per multiply-add) of one Tag call:
// the Swin encoder, image_proj and the tagging head with fc. The label
// queries and the first layer's query projection of them are computed once
// when the Tagger is made and not counted; normalisations, softmax and
// activations are not counted either.
func FLOPs(cfg Config) float64 {
	var mac float64
	g := float64(cfg.InputSize / cfg.PatchSize)
	mac += g * g * float64(cfg.EmbedDim*3*cfg.PatchSize*cfg.PatchSize) // patch embed
	st := cfg.stages()
	for i, s := range st {
		l, c := float64(s.Res*s.Res), float64(s.Dim)
		n := float64(s.Window * s.Window)
		hidden := float64(int(float64(s.Dim) * cfg.MLPRatio))
		block := l*c*3*c + // qkv
			2*l*n*c + // q·kᵀ and P·v over every window and head
			l*c*c + // proj
			2*l*c*hidden // fc1, fc2
		mac += float64(s.Depth) * block
		if i < len(st)-1 {
			mac += l / 4 * 4 * c * 2 * c // patch merging reduction
		}
	}
	last := st[len(st)-1]
	t := float64(last.Res*last.Res + 1)
	e := float64(cfg.LabelEmbedDim)
	mac += t * float64(cfg.VisionWidth) * e // image_proj
	k, h := float64(cfg.NumClasses), float64(cfg.TaggingHead.HiddenSize)
	in := float64(cfg.TaggingHead.IntermediateSize)
	layer := k*h*h + // query
		2*t*e*h + // key, value
		2*k*t*h + // scores and context
		k*h*h + // output dense
		2*k*h*in // intermediate, output
	mac += float64(cfg.TaggingHead.NumHiddenLayers) * layer
	if cfg.TaggingHead.NumHiddenLayers > 0 {
		mac -= k * h * h // the first query projection: made with the queries
	}
	mac += k * h // fc
	return 2 * mac
}
