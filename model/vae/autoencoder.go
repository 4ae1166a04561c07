package vae

import (
	"fmt"

	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

// Encoder is diffusers' vae.Encoder with double_z: image [N, in, H, W] to
// [N, 2·latent, H/f, W/f] (f = 2^(blocks-1)).
type Encoder struct {
	ConvIn      *nn.Conv2d            `weights:"conv_in"`
	DownBlocks  []*DownEncoderBlock2D `weights:"down_blocks"`
	MidBlock    *UNetMidBlock2D       `weights:"mid_block"`
	ConvNormOut *nn.GroupNorm         `weights:"conv_norm_out"`
	ConvOut     *nn.Conv2d            `weights:"conv_out"`
}

// NewEncoder makes an unbound encoder for cfg.
func NewEncoder(cfg Config) *Encoder {
	boc, g := cfg.BlockOutChannels, cfg.NormNumGroups
	e := &Encoder{ConvIn: nn.NewConv2d(cfg.InChannels, boc[0], 3, 1, 1, true)}
	out := boc[0]
	for i := range cfg.DownBlockTypes {
		in := out
		out = boc[i]
		e.DownBlocks = append(e.DownBlocks, NewDownEncoderBlock2D(in, out, cfg.LayersPerBlock, g, i != len(boc)-1))
	}
	top := boc[len(boc)-1]
	e.MidBlock = NewUNetMidBlock2D(top, g)
	e.ConvNormOut = nn.NewGroupNorm(g, top, normEps)
	e.ConvOut = nn.NewConv2d(top, 2*cfg.LatentChannels, 3, 1, 1, true)
	return e
}

// Forward maps every tile [N, in, h, w] to [N, 2·latent, h/f, w/f]; it
// consumes the tiles but never writes into them.
func (e *Encoder) Forward(xs Tiles) Tiles {
	for i, x := range xs {
		xs[i] = tileStep(x, e.ConvIn.Forward) // [N, C0, h, w]
	}
	for _, b := range e.DownBlocks {
		xs = b.Forward(xs) // [N, Ci, h/2^i, w/2^i]
	}
	xs = e.MidBlock.Forward(xs) // [N, Ctop, h/f, w/f]
	st := sharedStats(xs, e.ConvNormOut.Eps)
	for i, x := range xs {
		xs[i] = tileStep(x, func(x *tensor.Tensor) *tensor.Tensor {
			return e.ConvOut.ForwardEx(x, normAffine(e.ConvNormOut, st, x, true), nil, nil) // [N, 2·latent, h/f, w/f] conv_out(SiLU(norm(x)))
		})
	}
	return xs
}

// Decoder is diffusers' vae.Decoder: latent [N, latent, h, w] to image
// [N, out, h·f, w·f].
type Decoder struct {
	ConvIn      *nn.Conv2d          `weights:"conv_in"`
	MidBlock    *UNetMidBlock2D     `weights:"mid_block"`
	UpBlocks    []*UpDecoderBlock2D `weights:"up_blocks"`
	ConvNormOut *nn.GroupNorm       `weights:"conv_norm_out"`
	ConvOut     *nn.Conv2d          `weights:"conv_out"`
}

// NewDecoder makes an unbound decoder for cfg.
func NewDecoder(cfg Config) *Decoder {
	boc, g := cfg.BlockOutChannels, cfg.NormNumGroups
	top := boc[len(boc)-1]
	d := &Decoder{
		ConvIn:   nn.NewConv2d(cfg.LatentChannels, top, 3, 1, 1, true),
		MidBlock: NewUNetMidBlock2D(top, g),
	}
	out := top
	for i := range cfg.UpBlockTypes {
		in := out
		out = boc[len(boc)-1-i]
		d.UpBlocks = append(d.UpBlocks, NewUpDecoderBlock2D(in, out, cfg.LayersPerBlock+1, g, i != len(boc)-1))
	}
	d.ConvNormOut = nn.NewGroupNorm(g, boc[0], normEps)
	d.ConvOut = nn.NewConv2d(boc[0], cfg.OutChannels, 3, 1, 1, true)
	return d
}

// Forward maps every tile [N, latent, h, w] to [N, out, h·f, w·f]; it
// consumes the tiles but never writes into them.
func (d *Decoder) Forward(xs Tiles) Tiles {
	for i, x := range xs {
		xs[i] = tileStep(x, d.ConvIn.Forward) // [N, Ctop, h, w]
	}
	xs = d.MidBlock.Forward(xs) // [N, Ctop, h, w]
	for _, b := range d.UpBlocks {
		xs = b.Forward(xs) // [N, Ci, h·2^i, w·2^i]
	}
	st := sharedStats(xs, d.ConvNormOut.Eps)
	for i, x := range xs {
		xs[i] = tileStep(x, func(x *tensor.Tensor) *tensor.Tensor {
			return d.ConvOut.ForwardEx(x, normAffine(d.ConvNormOut, st, x, true), nil, nil) // [N, out, h·f, w·f] conv_out(SiLU(norm(x)))
		})
	}
	return xs
}

// AutoencoderKL is diffusers' AutoencoderKL.
type AutoencoderKL struct {
	Encoder       *Encoder   `weights:"encoder"`
	Decoder       *Decoder   `weights:"decoder"`
	QuantConv     *nn.Conv2d `weights:"quant_conv"`
	PostQuantConv *nn.Conv2d `weights:"post_quant_conv"`
	Cfg           Config
}

// New makes an unbound AutoencoderKL; it panics on a config that Validate
// rejects (LoadConfig returns those as errors).
func New(cfg Config) *AutoencoderKL {
	if err := cfg.Validate(); err != nil {
		panic("vae.New: " + err.Error())
	}
	l := cfg.LatentChannels
	return &AutoencoderKL{
		Encoder:       NewEncoder(cfg),
		Decoder:       NewDecoder(cfg),
		QuantConv:     nn.NewConv2d(2*l, 2*l, 1, 1, 0, true),
		PostQuantConv: nn.NewConv2d(l, l, 1, 1, 0, true),
		Cfg:           cfg,
	}
}

// TileOptions selects vaehook.py's tiled encoder/decoder. A tile size of 0
// means the OSEDiff default (1024 image pixels, 224 latent pixels).
type TileOptions struct {
	Enabled         bool
	EncoderTileSize int // image pixels (OSEDiff default 1024)
	DecoderTileSize int // latent pixels (OSEDiff default 224)
	Spill           Spill
}

// Spill bounds the memory of a tiled encode or decode: the tiles wait for
// their turn in temporary files whenever those held in memory would take
// more than Above bytes (0: never). Dir is the directory of the files
// (unlinked at once; "" is os.TempDir()). The result is unchanged: values go
// through the files bit for bit. The cost is copying the parked tiles
// through the file system at each GroupNorm. The budget counts the tiles
// between steps; a step also holds its input and output tiles, and between
// steps their buffers wait for the next step to reuse them.
type Spill struct {
	Above int64
	Dir   string
}

// The OSEDiff defaults and vaehook.py's fixed paddings.
const (
	DefaultEncoderTileSize = 1024
	DefaultDecoderTileSize = 224
	EncoderPad             = 32 // image pixels
	DecoderPad             = 11 // latent pixels
)

// EncoderTiled reports whether EncoderForward tiles an h×w image.
func (t TileOptions) EncoderTiled(h, w int) bool {
	return t.Enabled && max(h, w) > 2*EncoderPad+t.encoderTile()
}

// DecoderTiled reports whether Decode tiles an h×w latent.
func (t TileOptions) DecoderTiled(h, w int) bool {
	return t.Enabled && max(h, w) > 2*DecoderPad+t.decoderTile()
}

func (t TileOptions) encoderTile() int {
	if t.EncoderTileSize <= 0 {
		return DefaultEncoderTileSize
	}
	return t.EncoderTileSize
}

func (t TileOptions) decoderTile() int {
	if t.DecoderTileSize <= 0 {
		return DefaultDecoderTileSize
	}
	return t.DecoderTileSize
}

// EncoderForward runs the encoder on x [N, in, H, W] (values in [-1, 1]) and
// returns encoder_out [N, 2·latent, H/f, W/f], tiled when t says so. x is not
// modified.
func (m *AutoencoderKL) EncoderForward(x *tensor.Tensor, t TileOptions) *tensor.Tensor {
	m.checkInput("EncoderForward", x, m.Cfg.InChannels)
	h, w := x.Dim(2), x.Dim(3)
	if !t.EncoderTiled(h, w) {
		return untiled("encoder", x.Clone(), m.Encoder.Forward) // [N, 2·latent, H/f, W/f]
	}
	return tiledForward(x, t.encoderTile(), EncoderPad, m.Cfg.DownFactor(), false, t.Spill, m.Encoder.Forward)
}

// Moments is quant_conv: encoder_out [N, 2·latent, h, w] to the posterior
// moments (channels [0, latent) the mean, [latent, 2·latent) the log-variance).
func (m *AutoencoderKL) Moments(encoderOut *tensor.Tensor) *tensor.Tensor {
	m.checkInput("Moments", encoderOut, 2*m.Cfg.LatentChannels)
	return m.QuantConv.Forward(encoderOut) // [N, 2·latent, h, w]
}

// Encode is Moments(EncoderForward(x, t)).
func (m *AutoencoderKL) Encode(x *tensor.Tensor, t TileOptions) *tensor.Tensor {
	return m.Moments(m.EncoderForward(x, t))
}

// Decode maps z [N, latent, h, w] (already divided by the scaling factor)
// through post_quant_conv and the decoder (tiled when t says so) to the raw
// image [N, out, h·f, w·f] (not clamped).
func (m *AutoencoderKL) Decode(z *tensor.Tensor, t TileOptions) *tensor.Tensor {
	m.checkInput("Decode", z, m.Cfg.LatentChannels)
	p := m.PostQuantConv.Forward(z) // [N, latent, h, w]
	h, w := p.Dim(2), p.Dim(3)
	if !t.DecoderTiled(h, w) {
		return untiled("decoder", p, m.Decoder.Forward) // [N, out, h·f, w·f]
	}
	return tiledForward(p, t.decoderTile(), DecoderPad, m.Cfg.DownFactor(), true, t.Spill, m.Decoder.Forward)
}

// untiled runs fwd on x, a tensor the VAE owns, as one tile registered with
// a spiller that never parks: each activation then gives its pages back to
// the OS as soon as its last use is over (see consume), rather than when the
// collector and its scavenger get to it, which keeps the peak RSS of an
// untiled decode near what is live (0.3 GB less at 512×512, measured).
// Those buffers follow a memory plan kept from the previous call at this
// size (tensor.BeginReplayPlan, ended after sp.close as in tiledForward).
// Its first call records only (best fit would raise its peak), so the
// output, never handed back, is never placed in the slab.
func untiled(name string, x *tensor.Tensor, fwd func(Tiles) Tiles) *tensor.Tensor {
	sp := newSpiller(Spill{})
	defer tensor.BeginReplayPlan(fmt.Sprintf("vae.untiled %s %v", name, x.Shape()))()
	defer sp.close()
	y := fwd(Tiles{sp.adopt(x)})[0]
	release(y)
	return y
}

func (m *AutoencoderKL) checkInput(op string, x *tensor.Tensor, c int) {
	if x.Rank() != 4 || x.Dim(1) != c || x.Dim(0) < 1 || x.Dim(2) < 1 || x.Dim(3) < 1 {
		panic(fmt.Sprintf("vae.%s: input %v, want [N, %d, H, W]", op, x.Shape(), c))
	}
}
