package clip

import (
	"fmt"
	"math"
	"testing"

	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// The reference files hold only final states. To name the first diverging
// intermediate when the golden test fails, TestTextEncoderStages re-runs
// every stage of the tiny model on the float32 input the Go model gave it and
// compares with the same stage evaluated in float64 from the bound weights
// (an oracle for localisation; the golden tests stay the judge).

func f64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func layerNorm64(x []float64, d int, eps float64, w, b []float32) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/d; r++ {
		row := x[r*d : (r+1)*d]
		var mean, vs float64
		for _, v := range row {
			mean += v
		}
		mean /= float64(d)
		for _, v := range row {
			vs += (v - mean) * (v - mean)
		}
		inv := 1 / math.Sqrt(vs/float64(d)+eps)
		for i, v := range row {
			y[r*d+i] = (v-mean)*inv*float64(w[i]) + float64(b[i])
		}
	}
	return y
}

func linear64(x []float64, in, out int, w, b []float32) []float64 {
	rows := len(x) / in
	y := make([]float64, rows*out)
	for r := range rows {
		for o := range out {
			s := float64(b[o])
			for i := range in {
				s += x[r*in+i] * float64(w[o*in+i])
			}
			y[r*out+o] = s
		}
	}
	return y
}

func attention64(a *CLIPAttention, x []float64, seq int) []float64 {
	d := a.Heads * a.HeadDim
	q := linear64(x, d, d, a.QProj.Weight.Data(), a.QProj.Bias.Data())
	k := linear64(x, d, d, a.KProj.Weight.Data(), a.KProj.Bias.Data())
	v := linear64(x, d, d, a.VProj.Weight.Data(), a.VProj.Bias.Data())
	o := make([]float64, seq*d)
	scale := 1 / math.Sqrt(float64(a.HeadDim))
	p := make([]float64, seq)
	for h := range a.Heads {
		c := h * a.HeadDim
		for i := range seq {
			mx := math.Inf(-1)
			for j := 0; j <= i; j++ {
				var s float64
				for t := range a.HeadDim {
					s += q[i*d+c+t] * k[j*d+c+t]
				}
				p[j] = s * scale
				mx = max(mx, p[j])
			}
			var sum float64
			for j := 0; j <= i; j++ {
				p[j] = math.Exp(p[j] - mx)
				sum += p[j]
			}
			for j := 0; j <= i; j++ {
				for t := range a.HeadDim {
					o[i*d+c+t] += p[j] / sum * v[j*d+c+t]
				}
			}
		}
	}
	return linear64(o, d, d, a.OutProj.Weight.Data(), a.OutProj.Bias.Data())
}

func mlp64(m *CLIPMLP, x []float64) []float64 {
	h := linear64(x, m.FC1.In, m.FC1.Out, m.FC1.Weight.Data(), m.FC1.Bias.Data())
	for i, v := range h {
		if m.QuickGELU {
			h[i] = v / (1 + math.Exp(-1.702*v))
		} else {
			h[i] = v / 2 * (1 + math.Erf(v/math.Sqrt2))
		}
	}
	return linear64(h, m.FC2.In, m.FC2.Out, m.FC2.Weight.Data(), m.FC2.Bias.Data())
}

func TestTextEncoderStages(t *testing.T) {
	m := loadTinyModel(t)
	tok := loadTinyTokenizer(t)
	cfg := m.Config
	d, eps := cfg.HiddenSize, cfg.LayerNormEps
	ids := tok.Encode("A photo of a Cat sitting on a WOODEN table.")
	seq := len(ids)
	tm := m.TextModel

	type stage struct {
		name string
		got  *tensor.Tensor
		want []float64
	}
	var stages []stage
	// Embeddings.
	x := tm.Embeddings.Forward(ids)
	emb := make([]float64, seq*d)
	tw, pw := tm.Embeddings.TokenEmbedding.Weight.Data(), tm.Embeddings.PositionEmbedding.Weight.Data()
	for i, id := range ids {
		for c := range d {
			emb[i*d+c] = float64(tw[id*d+c]) + float64(pw[i*d+c])
		}
	}
	stages = append(stages, stage{"embeddings", x, emb})
	for li := range tm.Encoder.Layers {
		l := &tm.Encoder.Layers[li]
		p := fmt.Sprintf("encoder.layers.%d.", li)
		ln1 := l.LayerNorm1.Forward(x)
		stages = append(stages, stage{p + "layer_norm1", ln1, layerNorm64(f64(x.Data()), d, eps, l.LayerNorm1.Weight.Data(), l.LayerNorm1.Bias.Data())})
		att := l.SelfAttn.Forward(ln1)
		stages = append(stages, stage{p + "self_attn", att, attention64(l.SelfAttn, f64(ln1.Data()), seq)})
		res := nn.Add(x, att)
		ln2 := l.LayerNorm2.Forward(res)
		stages = append(stages, stage{p + "layer_norm2", ln2, layerNorm64(f64(res.Data()), d, eps, l.LayerNorm2.Weight.Data(), l.LayerNorm2.Bias.Data())})
		mlp := l.MLP.Forward(ln2)
		stages = append(stages, stage{p + "mlp", mlp, mlp64(l.MLP, f64(ln2.Data()))})
		// The whole layer, from its float32 input.
		out := l.Forward(x.Clone())
		h := f64(x.Data())
		a := attention64(l.SelfAttn, layerNorm64(h, d, eps, l.LayerNorm1.Weight.Data(), l.LayerNorm1.Bias.Data()), seq)
		for i := range h {
			h[i] += a[i]
		}
		f := mlp64(l.MLP, layerNorm64(h, d, eps, l.LayerNorm2.Weight.Data(), l.LayerNorm2.Bias.Data()))
		for i := range h {
			h[i] += f[i]
		}
		stages = append(stages, stage{p[:len(p)-1], out, h})
		x = out
	}
	fin := tm.FinalLayerNorm.Forward(x)
	stages = append(stages, stage{"final_layer_norm", fin, layerNorm64(f64(x.Data()), d, eps, tm.FinalLayerNorm.Weight.Data(), tm.FinalLayerNorm.Bias.Data())})

	for _, s := range stages {
		got := s.got.Data()
		var maxDiff, maxRef float64
		for i, w := range s.want {
			maxDiff = max(maxDiff, math.Abs(float64(got[i])-w))
			maxRef = max(maxRef, math.Abs(w))
		}
		if !(maxDiff <= stateRelTol*maxRef) {
			t.Fatalf("first diverging stage %s: max|diff| %.3g vs float64 (max|ref| %.3g)", s.name, maxDiff, maxRef)
		}
		t.Logf("%-28s max|diff| %.3g (max|ref| %.3g)", s.name, maxDiff, maxRef)
	}
}
