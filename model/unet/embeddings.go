package unet

import (
	"math"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// Timesteps is diffusers' Timesteps (get_timestep_embedding): the sinusoidal
// embedding of a scalar timestep, computed in float32 as diffusers does.
type Timesteps struct {
	NumChannels  int
	FlipSinToCos bool
	FreqShift    float32
}

// Forward embeds timestep t for n samples: [n, NumChannels].
func (p Timesteps) Forward(t float32, n int) *tensor.Tensor {
	half := p.NumChannels / 2
	emb := make([]float32, p.NumChannels)
	// exponent = -ln(10000)·arange(half) / (half - freq_shift), all float32
	lnMax := float32(-math.Log(10000))
	den := float32(half) - p.FreqShift
	for i := 0; i < half; i++ {
		e := lnMax * float32(i) / den
		arg := t * float32(math.Exp(float64(e))) // t·freq in float32
		s, c := float32(math.Sin(float64(arg))), float32(math.Cos(float64(arg)))
		if p.FlipSinToCos {
			emb[i], emb[half+i] = c, s // [cos | sin]
		} else {
			emb[i], emb[half+i] = s, c // [sin | cos]
		}
	} // an odd NumChannels leaves the last entry 0 (diffusers pads)
	y := tensor.New(n, p.NumChannels) // [n, NumChannels]
	for b := 0; b < n; b++ {
		copy(y.Data()[b*p.NumChannels:], emb)
	}
	return y
}

// TimestepEmbedding is diffusers' TimestepEmbedding: linear_1 → SiLU → linear_2.
type TimestepEmbedding struct {
	Linear1 *nn.Linear `weights:"linear_1"`
	Linear2 *nn.Linear `weights:"linear_2"`
}

// NewTimestepEmbedding makes an unbound TimestepEmbedding.
func NewTimestepEmbedding(in, dim int) *TimestepEmbedding {
	return &TimestepEmbedding{Linear1: nn.NewLinear(in, dim, true), Linear2: nn.NewLinear(dim, dim, true)}
}

// Forward maps [n, in] to [n, dim].
func (e *TimestepEmbedding) Forward(x *tensor.Tensor) *tensor.Tensor {
	h := e.Linear1.Forward(x)        // [n, dim]
	kernels.SiLU(h.Data(), h.Data()) // [n, dim]
	return e.Linear2.Forward(h)      // [n, dim]
}
