package osediff

import (
	"fmt"
	"math"

	"github.com/osediff-go/osediff/checkpoint"
)

// SchedulerConfig mirrors the fields of scheduler/scheduler_config.json that
// OSEDiff's DDPMScheduler reads (the SD 2.1-base file names PNDMScheduler; the
// reference loads it with DDPMScheduler).
type SchedulerConfig struct {
	ClassName         string    `json:"_class_name"`
	BetaStart         float64   `json:"beta_start"`
	BetaEnd           float64   `json:"beta_end"`
	BetaSchedule      string    `json:"beta_schedule"`
	NumTrainTimesteps int       `json:"num_train_timesteps"`
	PredictionType    string    `json:"prediction_type"`
	TrainedBetas      []float64 `json:"trained_betas"`
}

// LoadSchedulerConfig reads scheduler_config.json.
func LoadSchedulerConfig(path string) (SchedulerConfig, error) {
	c := SchedulerConfig{BetaStart: 0.0001, BetaEnd: 0.02, BetaSchedule: "linear", NumTrainTimesteps: 1000, PredictionType: "epsilon"}
	if err := checkpoint.LoadJSON(path, &c); err != nil {
		return c, err
	}
	if c.NumTrainTimesteps <= 0 || c.NumTrainTimesteps > 100000 {
		return c, fmt.Errorf("scheduler config %s: num_train_timesteps %d out of range", path, c.NumTrainTimesteps)
	}
	if c.PredictionType != "epsilon" {
		return c, fmt.Errorf("scheduler config %s: prediction_type %q not supported (OSEDiff uses epsilon)", path, c.PredictionType)
	}
	return c, nil
}

// AlphasCumprod computes DDPMScheduler.alphas_cumprod in float32 as torch does:
// betas from a float32 linspace (scaled_linear: of the square roots, then
// squared), alphas = 1 - betas, cumulative product accumulated in float64.
func (c SchedulerConfig) AlphasCumprod() ([]float32, error) {
	n := c.NumTrainTimesteps
	var betas []float32
	switch {
	case len(c.TrainedBetas) > 0:
		if len(c.TrainedBetas) != n {
			return nil, fmt.Errorf("scheduler: %d trained_betas for %d timesteps", len(c.TrainedBetas), n)
		}
		betas = make([]float32, n)
		for i, b := range c.TrainedBetas {
			betas[i] = float32(b)
		}
	case c.BetaSchedule == "scaled_linear":
		betas = linspace32(float32(math.Sqrt(c.BetaStart)), float32(math.Sqrt(c.BetaEnd)), n)
		for i, b := range betas {
			betas[i] = b * b
		}
	case c.BetaSchedule == "linear":
		betas = linspace32(float32(c.BetaStart), float32(c.BetaEnd), n)
	default:
		return nil, fmt.Errorf("scheduler: beta_schedule %q not supported", c.BetaSchedule)
	}
	// torch.cumprod accumulates float32 in double on the CPU.
	ac := make([]float32, n)
	p := 1.0
	for i, b := range betas {
		p *= float64(1 - b)
		ac[i] = float32(p)
	}
	return ac, nil
}

// linspace32 reproduces torch.linspace on float32 as the reference's torch
// (1.13, AVX2 kernel) computes it, bit for bit: step = (end-start)/(steps-1);
// 8-wide chunks whose base is start + step·idx (first half) or
// end - step·(steps-1-idx) (second half), each contracted into one fused
// multiply-add by the compiler, then base + i·step per lane; a scalar tail.
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	const lanes = 8
	step := (end - start) / float32(steps-1)
	half := steps / 2
	base := func(idx int) float32 {
		if idx < half {
			return float32(math.FMA(float64(step), float64(idx), float64(start)))
		}
		return float32(math.FMA(-float64(step), float64(steps-idx-1), float64(end)))
	}
	idx := 0
	for ; idx+lanes <= steps; idx += lanes {
		b := base(idx)
		for i := 0; i < lanes; i++ {
			out[idx+i] = b + float32(i)*step
		}
	}
	for ; idx < steps; idx++ {
		out[idx] = base(idx)
	}
	return out
}

// OneStep applies DDPMScheduler.step at timestep t with set_timesteps(1):
// x0 = (z - sqrt(1-a)·eps)/sqrt(a), a = alphasCumprod[t], in float32 (the
// variance term of the reference is 1e-10·N(0,1) and is dropped).
func OneStep(alphasCumprod []float32, t int, z, eps []float32, out []float32) {
	a := alphasCumprod[t]
	sa := float32(math.Sqrt(float64(a)))
	sb := float32(math.Sqrt(float64(1 - a)))
	for i := range out {
		out[i] = (z[i] - sb*eps[i]) / sa
	}
}
