package osediff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/lora"
	"github.com/osediff-go/osediff/model/clip"
	"github.com/osediff-go/osediff/model/ram"
	"github.com/osediff-go/osediff/model/unet"
	"github.com/osediff-go/osediff/model/vae"
	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// Timestep is the one diffusion step OSEDiff takes.
const Timestep = 999

// Tokenizer turns a prompt into the 77 token ids of the text encoder.
type Tokenizer interface{ Encode(text string) []int }

// Pipeline holds the loaded models. It is safe for concurrent use by several
// goroutines (each Upscale allocates its own activations); the engine's worker
// pool is shared, so concurrent calls take turns on the cores.
type Pipeline struct {
	Tokenizer     Tokenizer
	TextEncoder   *clip.CLIPTextModel
	UNet          *unet.UNet2DConditionModel
	VAE           *vae.AutoencoderKL
	AlphasCumprod []float32
	Tagger        *ram.Tagger // nil: tags must be given
	ScalingFactor float32
	Logger        *slog.Logger

	// LoRAReport says what the LoRA merge applied (nil without LoRA).
	LoRAReport *lora.Report
}

// LoadOptions says where the weights are.
type LoadOptions struct {
	// Model is a diffusers folder or a Hugging Face repo id found in the HF cache.
	Model string
	// LoRA is OSEDiff's osediff.pkl ("" = base model only, for experiments).
	LoRA string
	// LoRAAlpha is peft's lora_alpha (the official default, 8, when 0).
	LoRAAlpha float32
	// RAM and DAPE are the tagger checkpoints ("" = no tagger: tags must be given).
	RAM, DAPE string
	// TaggerConfig is a JSON file of the tagger's shape ("" = the real Swin-L RAM).
	TaggerConfig string
	// Logger receives load messages (nil: slog.Default()).
	Logger *slog.Logger
	// Weights is how the matrices of every Linear and convolution are held
	// once loaded and merged: nn.StoreF32 (the default, exact) or
	// nn.StoreF16 (half the memory; see nn.StoreF16).
	Weights nn.Storage
}

// Load reads the models and merges the LoRA weights.
func Load(o LoadOptions) (*Pipeline, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := checkpoint.ResolveModel(o.Model)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Logger: log}
	t0 := time.Now()
	if p.Tokenizer, err = clip.LoadTokenizer(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, fmt.Errorf("model %s: tokenizer: %w", dir, err)
	}
	sc, err := LoadSchedulerConfig(filepath.Join(dir, "scheduler", "scheduler_config.json"))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	if p.AlphasCumprod, err = sc.AlphasCumprod(); err != nil {
		return nil, err
	}
	if Timestep >= len(p.AlphasCumprod) {
		return nil, fmt.Errorf("model %s: scheduler has %d timesteps, OSEDiff needs %d", dir, len(p.AlphasCumprod), Timestep+1)
	}

	tcfg, err := clip.LoadConfig(filepath.Join(dir, "text_encoder", "config.json"))
	if err != nil {
		return nil, fmt.Errorf("model %s: text_encoder: %w", dir, err)
	}
	p.TextEncoder = clip.New(tcfg)
	if err := bindComponent(dir, "text_encoder", func(src checkpoint.Source) error {
		_, err := checkpoint.Bind(p.TextEncoder, src, clip.BindOptions())
		return err
	}); err != nil {
		return nil, err
	}
	ucfg, err := unet.LoadConfig(filepath.Join(dir, "unet", "config.json"))
	if err != nil {
		return nil, fmt.Errorf("model %s: unet: %w", dir, err)
	}
	p.UNet = unet.New(ucfg)
	if err := bindComponent(dir, "unet", func(src checkpoint.Source) error {
		_, err := checkpoint.Bind(p.UNet, src, checkpoint.BindOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	vcfg, err := vae.LoadConfig(filepath.Join(dir, "vae", "config.json"))
	if err != nil {
		return nil, fmt.Errorf("model %s: vae: %w", dir, err)
	}
	p.VAE = vae.New(vcfg)
	p.ScalingFactor = float32(vcfg.ScalingFactor)
	if err := bindComponent(dir, "vae", p.VAE.Bind); err != nil { // accepts the legacy attention key names
		return nil, err
	}
	log.Debug("base model loaded", "dir", dir, "seconds", time.Since(t0).Seconds())

	if o.LoRA != "" {
		ck, err := lora.LoadOSEDiff(o.LoRA)
		if err != nil {
			return nil, fmt.Errorf("LoRA: %w", err)
		}
		defer ck.Close()
		alpha := o.LoRAAlpha
		if alpha == 0 {
			alpha = 8
		}
		rep, err := lora.MergeOSEDiff(checkpoint.Params(p.UNet), checkpoint.Params(p.VAE), ck, alpha)
		if err != nil {
			return nil, fmt.Errorf("LoRA %s does not fit model %s: %w", o.LoRA, dir, err)
		}
		p.LoRAReport = rep
		log.Debug("LoRA merged", "file", o.LoRA, "report", rep.String())
	}
	if o.RAM != "" {
		cfg := ram.DefaultConfig()
		if o.TaggerConfig != "" {
			if cfg, err = ram.LoadConfig(o.TaggerConfig); err != nil {
				return nil, err
			}
		}
		if p.Tagger, err = ram.Load(o.RAM, o.DAPE, cfg); err != nil {
			return nil, err
		}
	}
	if o.Weights != nn.StoreF32 {
		rep, err := p.SetWeightStorage(o.Weights)
		if err != nil {
			return nil, err
		}
		log.Debug("weights converted", "storage", o.Weights.String(), "layers", rep.Layers, "bytes_before", rep.BytesBefore, "bytes_after", rep.BytesAfter)
	}
	log.Debug("pipeline loaded", "seconds", time.Since(t0).Seconds())
	return p, nil
}

// SetWeightStorage converts the matrices of every Linear and convolution of
// every model of the pipeline (text encoder, UNet, VAE, tagger) to s. Call it
// after any LoRA merge and while no Upscale runs.
func (p *Pipeline) SetWeightStorage(s nn.Storage) (nn.StorageReport, error) {
	var total nn.StorageReport
	for _, m := range []any{p.TextEncoder, p.UNet, p.VAE, p.Tagger} {
		if m == nil || reflect.ValueOf(m).IsNil() {
			continue
		}
		r, err := nn.SetModelStorage(m, s)
		if err != nil {
			return total, err
		}
		total.Layers += r.Layers
		total.Params += r.Params
		total.BytesBefore += r.BytesBefore
		total.BytesAfter += r.BytesAfter
	}
	return total, nil
}

// bindComponent opens a component's weights (the .fp16 variant when present)
// and binds them with the model's own binding rules.
func bindComponent(dir, comp string, bind func(checkpoint.Source) error) error {
	path, err := checkpoint.ComponentWeights(dir, comp, true)
	if err != nil {
		return fmt.Errorf("model %s: %w", dir, err)
	}
	st, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := bind(st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ColorFix names a colour correction.
type ColorFix string

// The colour fixes of the reference.
const (
	ColorFixAdaIN   ColorFix = "adain"
	ColorFixWavelet ColorFix = "wavelet"
	ColorFixNone    ColorFix = "none"
)

// Options control one Upscale call. The zero value means the reference's
// defaults (scale 4, process size 512, AdaIN, posterior mean, automatic tiling).
type Options struct {
	Scale       float64 // output = Scale × input (default 4)
	ProcessSize int     // the reference's process_size (default 512)
	// Tags replaces the DAPE tagger when non-nil ("" is a valid, empty tag list).
	Tags     *string
	Prompt   string   // the user's prompt, appended after the tags
	ColorFix ColorFix // default adain
	// Sample draws the VAE posterior sample (the reference's behaviour) instead
	// of using its mean; Seed seeds the noise, or Noise gives it.
	Sample bool
	Seed   uint64
	Noise  *tensor.Tensor // [1, latent, h, w] standard-normal noise (tests)

	TileOff        bool // never tile
	LatentTile     int  // default 96
	LatentOverlap  int  // default 32
	VAEEncoderTile int  // default 1024 (pixels)
	VAEDecoderTile int  // default 224 (latent pixels)
	// SpillAbove is the memory budget of a tiled VAE encode or decode's
	// waiting tiles: beyond it they wait in temporary files (in SpillDir, ""
	// for the system's). 0: no budget; SpillAuto: half the memory the OS
	// reports available when the call starts. The result is the same (see
	// vae.Spill).
	SpillAbove int64
	SpillDir   string

	// KeepProcessedSize returns the model's working size (what the reference
	// writes) instead of exactly Scale × the input size.
	KeepProcessedSize bool

	// Progress, when set, is called at each stage and tile.
	Progress func(Progress)
	// Trace, when set, receives every intermediate tensor by its reference name.
	Trace func(name string, t *tensor.Tensor)
}

// Progress reports where an Upscale call is.
type Progress struct {
	Stage string // "preprocess", "tagger", "text_encoder", "vae_encode", "unet", "vae_decode", "colorfix", "done"
	Done  int    // units done in this stage (tiles for unet)
	Total int
}

// stageSpans place each stage on a 0..100 scale by its usual share of the
// time at real size (start, width).
var stageSpans = map[string][2]float64{
	"preprocess": {0, 2}, "tagger": {2, 5}, "text_encoder": {7, 3}, "vae_encode": {10, 25},
	"unet": {35, 30}, "vae_decode": {65, 33}, "colorfix": {98, 2}, "done": {100, 0},
}

// Percent is how far the Upscale call is, from 0 to 100.
func (p Progress) Percent() float64 {
	sp := stageSpans[p.Stage]
	pct := sp[0]
	if p.Total > 0 {
		pct += sp[1] * float64(p.Done) / float64(p.Total)
	}
	return pct
}

func (o *Options) defaults() error {
	if o.Scale == 0 {
		o.Scale = 4
	}
	if o.ProcessSize == 0 {
		o.ProcessSize = 512
	}
	if o.ColorFix == "" {
		o.ColorFix = ColorFixAdaIN
	}
	if o.LatentTile == 0 {
		o.LatentTile = 96
	}
	if o.LatentOverlap == 0 {
		o.LatentOverlap = 32
	}
	if o.VAEEncoderTile == 0 {
		o.VAEEncoderTile = 1024
	}
	if o.VAEDecoderTile == 0 {
		o.VAEDecoderTile = 224
	}
	switch {
	case math.IsNaN(o.Scale) || o.Scale < 0.25 || o.Scale > 16:
		return fmt.Errorf("scale %g out of range [0.25, 16]", o.Scale)
	case o.ProcessSize < 8 || o.ProcessSize > 8192:
		return fmt.Errorf("process size %d out of range [8, 8192]", o.ProcessSize)
	case o.LatentTile < 8 || o.LatentOverlap < 0 || o.LatentOverlap >= o.LatentTile:
		return fmt.Errorf("latent tile %d / overlap %d invalid (tile >= 8, 0 <= overlap < tile)", o.LatentTile, o.LatentOverlap)
	case o.SpillAbove < SpillAuto:
		return fmt.Errorf("spill budget %d invalid (0: none, SpillAuto, else bytes)", o.SpillAbove)
	case o.VAEEncoderTile < 8 || o.VAEDecoderTile < 1:
		return fmt.Errorf("VAE tile sizes %d/%d invalid", o.VAEEncoderTile, o.VAEDecoderTile)
	}
	switch o.ColorFix {
	case ColorFixAdaIN, ColorFixWavelet, ColorFixNone:
	case "nofix":
		o.ColorFix = ColorFixNone
	default:
		return fmt.Errorf("colour fix %q: want adain, wavelet or none", o.ColorFix)
	}
	return nil
}

// ErrNoTagger is returned when no tags were given and no tagger is loaded.
var ErrNoTagger = errors.New("no tags given and no DAPE tagger loaded (give tags, or the RAM and DAPE weights)")

// Result is one upscaled image and what produced it.
type Result struct {
	Image  *imageio.RGB8 // the output, 8-bit RGB
	Plan   Plan          // the pre-processing geometry
	Tags   string
	Prompt string
	// Timings per stage.
	Stages []StageTime
}

// StageTime is the wall time of one stage.
type StageTime struct {
	Name    string
	Seconds float64
	// SystemSeconds is the system CPU time the whole process used during the
	// stage (Unix; 0 elsewhere): mostly page faults of new memory and the
	// copies of spilled tiles. Other goroutines' work (a server's other
	// requests) counts too.
	SystemSeconds float64
}

func (o *Options) report(stage string, done, total int) {
	if o.Progress != nil {
		o.Progress(Progress{Stage: stage, Done: done, Total: total})
	}
}

func (o *Options) trace(name string, t *tensor.Tensor) {
	if o.Trace != nil {
		o.Trace(name, t)
	}
}

// Upscale restores and upscales one image. The context cancels between stages
// and between tiles.
func (p *Pipeline) Upscale(ctx context.Context, img *imageio.RGB8, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if img == nil || img.W <= 0 || img.H <= 0 {
		return nil, errors.New("empty image")
	}
	res := &Result{}
	// The decode reuses the encode's spill files and memory pages.
	defer vae.Hold()()
	sys0 := systemSeconds()
	stage := func(name string, t0 time.Time) {
		sys := systemSeconds()
		res.Stages = append(res.Stages, StageTime{name, time.Since(t0).Seconds(), sys - sys0})
		sys0 = sys
	}

	// 1. Pre-processing exactly as the reference (Pillow resampling on uint8).
	t0 := time.Now()
	o.report("preprocess", 0, 1)
	up, plan, err := Preprocess(img, o.Scale, o.ProcessSize)
	if err != nil {
		return nil, err
	}
	lq := imageio.ToTensor(up) // [1, 3, H, W] in [0, 1]
	o.trace("input_upscaled", lq)
	stage("preprocess", t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 2. Prompt: DAPE tags (or the given ones) + the user's prompt.
	t0 = time.Now()
	var tags string
	switch {
	case o.Tags != nil:
		tags = *o.Tags
	case p.Tagger != nil:
		o.report("tagger", 0, 1)
		r, err := p.Tagger.Tag(lq)
		if err != nil {
			return nil, fmt.Errorf("tagger: %w", err)
		}
		tags = strings.Join(r.Tags, ", ")
		stage("tagger", t0)
	default:
		return nil, ErrNoTagger
	}
	res.Tags = tags
	res.Prompt = BuildPrompt(tags, o.Prompt)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 3. Text encoder.
	t0 = time.Now()
	o.report("text_encoder", 0, 1)
	ids := p.Tokenizer.Encode(res.Prompt)
	embeds := p.TextEncoder.Forward(ids) // [1, 77, D]
	o.trace("prompt_embeds", embeds)
	stage("text_encoder", t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 4. VAE encode (LoRA merged), posterior mean or sample.
	t0 = time.Now()
	o.report("vae_encode", 0, 1)
	x := lq.Clone()
	for i, v := range x.Data() {
		x.Data()[i] = v*2 - 1
	}
	tiles := vae.TileOptions{Enabled: !o.TileOff, EncoderTileSize: o.VAEEncoderTile, DecoderTileSize: o.VAEDecoderTile,
		Spill: vae.Spill{Above: spillBudget(o.SpillAbove), Dir: o.SpillDir}}
	var encOut *tensor.Tensor
	if err := spillSafe(func() { encOut = p.VAE.EncoderForward(x, tiles) }); err != nil { // [1, 2*lat, h, w]
		return nil, err
	}
	x = nil
	o.trace("encoder_out", encOut)
	moments := p.VAE.Moments(encOut) // [1, 2*lat, h, w]
	o.trace("moments", moments)
	latent, err := p.posterior(moments, &o) // [1, lat, h, w]
	if err != nil {
		return nil, err
	}
	o.trace("lq_latent", latent)
	stage("vae_encode", t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 5. One UNet call at t=999 (tiled over the latent when large).
	t0 = time.Now()
	h, w := latent.Dim(2), latent.Dim(3)
	var pred *tensor.Tensor
	if o.TileOff || h*w <= o.LatentTile*o.LatentTile {
		o.report("unet", 0, 1)
		pred = p.UNet.Forward(latent, Timestep, embeds) // [1, lat, h, w]
		o.report("unet", 1, 1)
	} else {
		pred, err = TiledUNet(ctx, latent, o.LatentTile, o.LatentOverlap, func(done, total int) { o.report("unet", done, total) },
			func(tile *tensor.Tensor) *tensor.Tensor { return p.UNet.Forward(tile, Timestep, embeds) })
		if err != nil {
			return nil, err
		}
	}
	o.trace("model_pred", pred)
	stage("unet", t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 6. x0 = (z - sqrt(1-a) eps)/sqrt(a); decoder input = x0 / scaling factor.
	x0 := tensor.New(latent.Shape()...)
	OneStep(p.AlphasCumprod, Timestep, latent.Data(), pred.Data(), x0.Data())
	o.trace("x_denoised", x0)
	decIn := tensor.New(x0.Shape()...)
	for i, v := range x0.Data() {
		decIn.Data()[i] = v / p.ScalingFactor
	}
	o.trace("decoder_input", decIn)

	// 7. VAE decode, clamp, truncating 8-bit conversion.
	t0 = time.Now()
	o.report("vae_decode", 0, 1)
	var dec *tensor.Tensor
	if err := spillSafe(func() { dec = p.VAE.Decode(decIn, tiles) }); err != nil { // [1, 3, H, W]
		return nil, err
	}
	o.trace("decoded_raw", dec)
	stage("vae_decode", t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, v := range dec.Data() {
		v = min(max(v, -1), 1)
		dec.Data()[i] = v*0.5 + 0.5
	}
	out, err := imageio.FromTensor(dec) // ToPILImage: uint8(x*255), truncating
	if err != nil {
		return nil, err
	}
	dec = nil

	// 8. Colour fix against the upscaled input.
	t0 = time.Now()
	o.report("colorfix", 0, 1)
	switch o.ColorFix {
	case ColorFixAdaIN:
		f := AdaIN(imageio.ToTensor(out), lq)
		o.trace("colorfix_adain_float", f)
		out, _ = imageio.FromTensor(f)
	case ColorFixWavelet:
		f := WaveletColorFix(imageio.ToTensor(out), lq)
		o.trace("colorfix_wavelet_float", f)
		out, _ = imageio.FromTensor(f)
	}
	stage("colorfix", t0)

	// 9. Exactly Scale × the input size (the reference keeps the working size).
	if !o.KeepProcessedSize {
		if out, err = FinalResize(out, plan); err != nil {
			return nil, err
		}
	}
	res.Plan = plan
	res.Image = out
	o.report("done", 1, 1)
	return res, nil
}

// BuildPrompt is the reference's f"{tags}, {prompt},".
func BuildPrompt(tags, prompt string) string { return tags + ", " + prompt + "," }

// posterior returns the scaled latent: mean (default) or mean + std·eps.
func (p *Pipeline) posterior(moments *tensor.Tensor, o *Options) (*tensor.Tensor, error) {
	c2, h, w := moments.Dim(1), moments.Dim(2), moments.Dim(3)
	c := c2 / 2
	m := moments.Data()
	lat := tensor.New(1, c, h, w)
	ld := lat.Data()
	hw := h * w
	var eps []float32
	if o.Sample {
		if o.Noise != nil {
			if o.Noise.Numel() != c*hw {
				return nil, fmt.Errorf("noise has shape %v, want [1, %d, %d, %d]", o.Noise.Shape(), c, h, w)
			}
			eps = o.Noise.Contiguous().Data()
		} else {
			r := rand.New(rand.NewPCG(o.Seed, 0x05ED1FF))
			eps = make([]float32, c*hw)
			for i := range eps {
				eps[i] = float32(r.NormFloat64())
			}
		}
	}
	for i := 0; i < c*hw; i++ {
		v := m[i]
		if eps != nil {
			lv := min(max(m[c*hw+i], -30), 20)
			std := float32(math.Exp(float64(0.5 * lv)))
			v += std * eps[i]
		}
		ld[i] = v * p.ScalingFactor
	}
	return lat, nil
}

// spillSafe runs a VAE call and returns the failure to read a spilled tile
// back as an error (other panics go on).
func spillSafe(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(*vae.SpillError)
			if !ok {
				panic(r)
			}
			err = se
		}
	}()
	f()
	return nil
}
