package unet

import "github.com/osediff-go/osediff/nn"

// FLOPs counts the floating-point operations of one Forward for a single
// h×w latent and textLen text tokens: convolutions, linear layers (time
// embedding included) and the two attention matmuls, a multiply-add counting
// as 2. Norms, activations, softmax and additions are not counted (the
// convention of ../shared/design/peer-bench.md).
func FLOPs(cfg Config, h, w, textLen int) float64 { return flops(cfg, h, w, textLen, false) }

// ExecutedFLOPs is FLOPs as the upsamplers compute an exact ×2: as phase
// convolutions, 4/9 of their counted FLOPs (Upsample2D.Forward; fp32, fp16
// weights and bf16 alike, unless a layer is left with only its packed 3×3
// bf16 weights).
func ExecutedFLOPs(cfg Config, h, w, textLen int) float64 { return flops(cfg, h, w, textLen, true) }

func flops(cfg Config, h, w, textLen int, phases bool) float64 {
	m := New(cfg) // shapes only, no weight storage
	var f float64
	conv := func(c *nn.Conv2d, h, w int) (int, int) {
		oh, ow := c.P.OutSize(h, w)
		f += 2 * float64(c.P.OutC*c.P.InC*c.P.KH*c.P.KW) * float64(oh*ow)
		return oh, ow
	}
	linear := func(l *nn.Linear, rows int) { f += 2 * float64(rows) * float64(l.In*l.Out) }
	resnet := func(r *ResnetBlock2D, h, w int) {
		conv(r.Conv1, h, w)
		linear(r.TimeEmbProj, 1)
		conv(r.Conv2, h, w)
		if r.ConvShortcut != nil {
			conv(r.ConvShortcut, h, w)
		}
	}
	attention := func(a *Attention, lq, lk int) {
		linear(a.ToQ, lq)
		linear(a.ToK, lk)
		linear(a.ToV, lk)
		f += 2 * 2 * float64(a.Heads) * float64(lq) * float64(lk) * float64(a.Dim) // q·kᵀ and p·v
		linear(a.ToOut, lq)
	}
	transformer := func(t *Transformer2DModel, h, w int) {
		l := h * w
		linear(t.ProjIn, l)
		for i := range t.TransformerBlocks {
			b := &t.TransformerBlocks[i]
			attention(b.Attn1, l, l)
			attention(b.Attn2, l, textLen)
			linear(b.FF.Proj, l)
			linear(b.FF.Out, l)
		}
		linear(t.ProjOut, l)
	}

	linear(m.TimeEmbedding.Linear1, 1)
	linear(m.TimeEmbedding.Linear2, 1)
	h, w = conv(m.ConvIn, h, w)
	sizes := [][2]int{{h, w}} // spatial size of every skip connection
	for i := range m.DownBlocks {
		b := &m.DownBlocks[i]
		for j := range b.Resnets {
			resnet(&b.Resnets[j], h, w)
			if len(b.Attentions) > 0 {
				transformer(&b.Attentions[j], h, w)
			}
			sizes = append(sizes, [2]int{h, w})
		}
		for j := range b.Downsamplers {
			h, w = conv(b.Downsamplers[j].Conv, h, w)
			sizes = append(sizes, [2]int{h, w})
		}
	}
	resnet(&m.MidBlock.Resnets[0], h, w)
	for i := range m.MidBlock.Attentions {
		transformer(&m.MidBlock.Attentions[i], h, w)
		resnet(&m.MidBlock.Resnets[i+1], h, w)
	}
	for i := range m.UpBlocks {
		b := &m.UpBlocks[i]
		for j := range b.Resnets {
			resnet(&b.Resnets[j], h, w)
			if len(b.Attentions) > 0 {
				transformer(&b.Attentions[j], h, w)
			}
		}
		sizes = sizes[:len(sizes)-len(b.Resnets)]
		for j := range b.Upsamplers {
			next := sizes[len(sizes)-1]
			before := f
			exact := next[0] == 2*h && next[1] == 2*w
			h, w = conv(b.Upsamplers[j].Conv, next[0], next[1])
			if phases && exact {
				f = before + (f-before)*4/9
			}
		}
	}
	conv(m.ConvOut, h, w)
	return f
}
