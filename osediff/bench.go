package osediff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/model/clip"
	"github.com/osediff-go/osediff/model/ram"
	"github.com/osediff-go/osediff/model/unet"
	"github.com/osediff-go/osediff/model/vae"
	"github.com/osediff-go/osediff/nn"
)

// fixedTokenizer stands in for the CLIP tokenizer when no vocabulary is at
// hand (benchmarks with random weights): the compute does not depend on ids.
type fixedTokenizer struct{}

func (fixedTokenizer) Encode(string) []int {
	ids := make([]int, 77)
	ids[0] = 49406
	for i := 1; i < 12; i++ {
		ids[i] = 320 + i
	}
	ids[12] = 49407
	return ids
}

// NewRandom builds the full SD 2.1-base pipeline (and, with tagger, the
// Swin-L RAM tagger) with random weights: the compute of the real model
// without a download. For benchmarks and tests.
func NewRandom(seed uint64, tagger bool) (*Pipeline, error) {
	sc := SchedulerConfig{BetaStart: 0.00085, BetaEnd: 0.012, BetaSchedule: "scaled_linear", NumTrainTimesteps: 1000, PredictionType: "epsilon"}
	ac, err := sc.AlphasCumprod()
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Tokenizer: fixedTokenizer{}, AlphasCumprod: ac}
	p.TextEncoder = clip.New(clip.SD21BaseConfig())
	checkpoint.RandomInit(p.TextEncoder, seed)
	p.UNet = unet.New(unet.SD21BaseConfig())
	checkpoint.RandomInit(p.UNet, seed+1)
	vc := vae.SD21BaseConfig()
	p.VAE = vae.New(vc)
	p.ScalingFactor = float32(vc.ScalingFactor)
	checkpoint.RandomInit(p.VAE, seed+2)
	if tagger {
		if p.Tagger, err = NewRandomTagger(seed + 3); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// NewRandomTagger builds the Swin-L RAM/DAPE tagger with random weights.
func NewRandomTagger(seed uint64) (*ram.Tagger, error) {
	cfg := ram.DefaultConfig()
	m := ram.NewRAMLora(cfg)
	checkpoint.RandomInit(m, seed)
	return ram.NewTagger(m, cfg)
}

// TaggerBenchCase is the benchmark case of the DAPE tagger alone
// (RunTaggerBench).
const TaggerBenchCase = "dape"

// RunTaggerBench times the DAPE tagger alone as the 128→512 case runs it
// (the peer script's --dape): the synthetic 128×128 photo is enlarged to
// 512×512 as Upscale's preprocessing does (not timed), then each run tags
// it (resize to 384×384, normalisation, Swin-L, tagging head, thresholds).
// It reports one stage, "tagger": the median of runs after warmup untimed
// ones, and the peak RSS from the first timed run on (Linux).
func RunTaggerBench(tg *ram.Tagger, precision string, warmup, runs int) (*BenchResult, error) {
	prec, err := nn.ParsePrecision(precision)
	if err != nil {
		return nil, err
	}
	defer nn.SetPrecision(nn.SetPrecision(prec))
	kernels.PeakGFLOPs()
	up, _, err := Preprocess(syntheticImage(128, 128, 7), 4, 512)
	if err != nil {
		return nil, err
	}
	lq := imageio.ToTensor(up) // [1, 3, 512, 512] in [0, 1], as Upscale hands it to the tagger
	for range warmup {
		if _, err := tg.Tag(lq); err != nil {
			return nil, err
		}
	}
	runs = max(runs, 1)
	resetPeakRSS()
	times := make([]float64, runs)
	for i := range times {
		t0 := time.Now()
		if _, err := tg.Tag(lq); err != nil {
			return nil, err
		}
		times[i] = time.Since(t0).Seconds()
	}
	sec := median(times)
	f := ram.FLOPs(tg.Config)
	peak := kernels.RefinePeak()
	st := BenchStage{Name: "tagger", Seconds: sec, FLOPs: f, GFLOPs: f / sec / 1e9}
	st.Peak = 100 * st.GFLOPs / peak
	return &BenchResult{Case: TaggerBenchCase, Precision: prec.String(), Stages: []BenchStage{st},
		TotalSeconds: sec, TotalFLOPs: f, ExecutedFLOPs: f, PeakExecuted: st.Peak, GFLOPs: st.GFLOPs, Peak: st.Peak,
		PeakRSSBytes: peakRSS(), PeakGFLOPs: peak, BF16Native: nn.BF16Native(), Runs: times, Warmup: warmup}, nil
}

// BenchStage is one stage of a benchmark run.
type BenchStage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	FLOPs   float64 `json:"flops"` // the model's count (the baseline's convention)
	GFLOPs  float64 `json:"gflops"`
	Peak    float64 `json:"percent_of_peak"`
	// ExecutedFLOPs, where it differs from FLOPs, is what the stage computed:
	// the VAE decoder's and the UNet's upsamplers run as 2×2 phase
	// convolutions, 4/9 of their counted FLOPs (in fp32 and bf16 alike).
	ExecutedFLOPs float64 `json:"executed_flops,omitempty"`
	// SystemSeconds is the process's system CPU time in the stage (see
	// StageTime.SystemSeconds), the median over the runs.
	SystemSeconds float64 `json:"system_seconds"`
}

// BenchResult is the outcome of one benchmark case.
type BenchResult struct {
	Case      string `json:"case"`
	Precision string `json:"precision"`
	Weights   string `json:"weights"` // weight storage: fp32 or fp16
	// SpillAboveBytes is the VAE tiles' memory budget of the run (0: none,
	// -1: auto, half the available memory).
	SpillAboveBytes int64        `json:"spill_above_bytes"`
	Stages          []BenchStage `json:"stages"`
	TotalSeconds    float64      `json:"total_seconds"`
	TotalFLOPs      float64      `json:"total_flops"`
	// ExecutedFLOPs and PeakExecuted: the run's FLOPs as computed (see
	// BenchStage.ExecutedFLOPs) and their rate as a percentage of the peak.
	ExecutedFLOPs float64 `json:"executed_flops"`
	PeakExecuted  float64 `json:"percent_of_peak_executed"`
	GFLOPs        float64 `json:"gflops"`
	Peak          float64 `json:"percent_of_peak"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
	PeakGFLOPs    float64 `json:"peak_gflops"`
	// BF16Native tells whether bf16 ran on the CPU's dot-product
	// instructions (false: the fp32 fallback).
	BF16Native bool `json:"bf16_native"`
	// Runs are the totals of the timed runs (TotalSeconds is their median).
	Runs   []float64 `json:"runs"`
	Warmup int       `json:"warmup"`
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchCases are the benchmark cases: input side → output side at scale 4.
var BenchCases = map[string]int{"128_to_512": 128, "512_to_2048": 512, "256_to_1024": 256}

// RunBench runs one benchmark case ("128_to_512", "512_to_2048") on p with a
// synthetic photo-like input, warmup untimed runs then runs timed ones, and
// reports the median of each stage and of the run totals (as the peer
// script does). With the tagger it also times DAPE. Peak RSS is the
// high-water mark from the first timed run on (Linux).
func RunBench(ctx context.Context, p *Pipeline, name, precision string, warmup, runs int, spillAbove int64) (*BenchResult, error) {
	side, ok := BenchCases[name]
	if !ok {
		return nil, fmt.Errorf("unknown case %q (want 128_to_512 or 512_to_2048)", name)
	}
	prec, err := nn.ParsePrecision(precision)
	if err != nil {
		return nil, err
	}
	defer nn.SetPrecision(nn.SetPrecision(prec))
	kernels.PeakGFLOPs() // a first estimate of the peak before the runs, a second after (RefinePeak)
	img := syntheticImage(side, side, 7)
	tags := "building, city, sky, street, tree"
	o := Options{Scale: 4, ProcessSize: 512, SpillAbove: spillAbove}
	if p.Tagger == nil {
		o.Tags = &tags
	}
	for i := 0; i < warmup; i++ {
		if _, err := p.Upscale(ctx, img, o); err != nil {
			return nil, err
		}
	}
	runs = max(runs, 1)
	resetPeakRSS()
	var res *Result
	totals := make([]float64, runs)
	stageTimes, stageSys := map[string][]float64{}, map[string][]float64{}
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		r, err := p.Upscale(ctx, img, o)
		if err != nil {
			return nil, err
		}
		totals[i] = time.Since(t0).Seconds()
		for _, s := range r.Stages {
			stageTimes[s.Name] = append(stageTimes[s.Name], s.Seconds)
			stageSys[s.Name] = append(stageSys[s.Name], s.SystemSeconds)
		}
		res = r
	}
	total := median(totals)
	for i := range res.Stages {
		res.Stages[i].Seconds = median(stageTimes[res.Stages[i].Name])
		res.Stages[i].SystemSeconds = median(stageSys[res.Stages[i].Name])
	}
	W, H := res.Plan.W, res.Plan.H
	h, w := H/8, W/8
	tiles := vae.TileOptions{Enabled: !o.TileOff, EncoderTileSize: o.VAEEncoderTile, DecoderTileSize: o.VAEDecoderTile} // as Upscale tiles
	ucfg := p.UNet.Config
	unetFLOPs, unetExec := 0.0, 0.0
	if h*w <= 96*96 {
		unetFLOPs, unetExec = unet.FLOPs(ucfg, h, w, 77), unet.ExecutedFLOPs(ucfg, h, w, 77)
	} else {
		for _, t := range LatentTileBoxes(h, w, 96, 32) {
			unetFLOPs += unet.FLOPs(ucfg, t.H, t.W, 77)
			unetExec += unet.ExecutedFLOPs(ucfg, t.H, t.W, 77)
		}
	}
	flops := map[string]float64{
		"text_encoder": clip.FLOPs(p.TextEncoder.Config, 77),
		"vae_encode":   vae.EncodeFLOPs(p.VAE.Cfg, tiles, H, W),
		"unet":         unetFLOPs,
		"vae_decode":   vae.DecodeFLOPs(p.VAE.Cfg, tiles, h, w),
	}
	if p.Tagger != nil {
		flops["tagger"] = ram.FLOPs(p.Tagger.Config)
	}
	peak := kernels.RefinePeak() // measured before the runs and again now: the higher
	br := &BenchResult{Case: name, SpillAboveBytes: spillAbove, Precision: prec.String(), TotalSeconds: total, PeakGFLOPs: peak, BF16Native: nn.BF16Native(),
		Runs: totals, Warmup: warmup}
	executed := map[string]float64{}
	if up := p.VAE.Decoder.UpBlocks; len(up) > 0 && len(up[0].Upsamplers) > 0 && up[0].Upsamplers[0].Conv.CanUpsampleConv() {
		executed["vae_decode"] = flops["vae_decode"] - 5.0/9*vae.DecodeUpsamplerFLOPs(p.VAE.Cfg, tiles, h, w)
	}
	if up := p.UNet.UpBlocks; len(up) > 0 && len(up[0].Upsamplers) > 0 && up[0].Upsamplers[0].Conv.CanUpsampleConv() {
		executed["unet"] = unetExec
	}
	for _, s := range res.Stages {
		f := flops[s.Name]
		st := BenchStage{Name: s.Name, Seconds: s.Seconds, FLOPs: f, ExecutedFLOPs: executed[s.Name], SystemSeconds: s.SystemSeconds}
		if s.Seconds > 0 {
			st.GFLOPs = f / s.Seconds / 1e9
			st.Peak = 100 * st.GFLOPs / peak
		}
		br.TotalFLOPs += f
		if e, ok := executed[s.Name]; ok {
			f = e
		}
		br.ExecutedFLOPs += f
		br.Stages = append(br.Stages, st)
	}
	br.GFLOPs = br.TotalFLOPs / total / 1e9
	br.Peak = 100 * br.GFLOPs / peak
	br.PeakExecuted = 100 * br.ExecutedFLOPs / total / 1e9 / peak
	br.PeakRSSBytes = peakRSS()
	return br, nil
}

// syntheticImage draws a deterministic photo-like test image: gradients,
// shapes and mild noise.
func syntheticImage(w, h int, seed uint64) *imageio.RGB8 {
	r := rand.New(rand.NewPCG(seed, 1))
	m := imageio.NewRGB8(w, h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			fy, fx := float64(y)/float64(h), float64(x)/float64(w)
			cr, cg, cb := 90+120*fy, 140+80*fy, 220-40*fy // sky
			if fy > 0.55 {
				cr, cg, cb = 70+60*fx, 110+40*fy, 60 // ground
			}
			if fx > 0.3 && fx < 0.6 && fy > 0.25 && fy < 0.75 { // building
				cr, cg, cb = 150, 140, 130
				if (x/6)%2 == 0 && (y/8)%2 == 0 {
					cr, cg, cb = 60, 70, 90
				}
			}
			n := r.NormFloat64() * 6
			i := 3 * (y*w + x)
			m.Pix[i] = clampByte(cr + n)
			m.Pix[i+1] = clampByte(cg + n)
			m.Pix[i+2] = clampByte(cb + n)
		}
	}
	return m
}

func clampByte(v float64) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// resetPeakRSS resets the kernel's high-water mark (Linux) so that peakRSS
// measures the inference, not the model build.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS reads VmHWM (Linux), in bytes; 0 elsewhere.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
