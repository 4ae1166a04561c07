package vae

// FLOP counts (a multiply-add is 2 FLOPs) of the convolutions, linear
// projections and attention matmuls of an untiled forward, the convention of
// the project's PyTorch baseline (shared/design/peer-bench.md). Norms,
// activations, additions and the softmax are not counted.

func convFLOPs(in, out, k, oh, ow int) float64 {
	return 2 * float64(in) * float64(out) * float64(k*k) * float64(oh) * float64(ow)
}

func resnetFLOPs(in, out, h, w int) float64 {
	f := convFLOPs(in, out, 3, h, w) + convFLOPs(out, out, 3, h, w)
	if in != out {
		f += convFLOPs(in, out, 1, h, w)
	}
	return f
}

func midFLOPs(c, h, w int) float64 {
	l := float64(h * w)
	attn := 4*2*l*float64(c)*float64(c) + 2*2*l*l*float64(c) // q,k,v,out projections + q·kᵀ and p·v
	return 2*resnetFLOPs(c, c, h, w) + attn
}

// EncoderFLOPs counts the encoder plus quant_conv on an h×w image (the
// baseline's "VAE encode" stage).
func EncoderFLOPs(cfg Config, h, w int) float64 {
	f, lh, lw := encoderBodyFLOPs(cfg, h, w)
	return f + convFLOPs(2*cfg.LatentChannels, 2*cfg.LatentChannels, 1, lh, lw) // quant_conv
}

// encoderBodyFLOPs counts the encoder without quant_conv on an h×w image,
// and returns the size of its output.
func encoderBodyFLOPs(cfg Config, h, w int) (f float64, lh, lw int) {
	boc := cfg.BlockOutChannels
	f = convFLOPs(cfg.InChannels, boc[0], 3, h, w)
	out := boc[0]
	for i := range boc {
		in := out
		out = boc[i]
		for j := 0; j < cfg.LayersPerBlock; j++ {
			if j > 0 {
				in = out
			}
			f += resnetFLOPs(in, out, h, w)
		}
		if i != len(boc)-1 {
			h, w = (h+1)/2, (w+1)/2 // pad (0,1,0,1), 3×3 stride 2
			f += convFLOPs(out, out, 3, h, w)
		}
	}
	top := boc[len(boc)-1]
	f += midFLOPs(top, h, w)
	f += convFLOPs(top, 2*cfg.LatentChannels, 3, h, w)
	return f, h, w
}

// EncodeFLOPs counts what Encode (EncoderForward and quant_conv) computes on
// an h×w image with tiling t: EncoderFLOPs untiled; tiled, each tile's
// encoder on its padded box (the overlaps twice, and the mid block's
// attention within the tile: at 2048×2048 that is 2.5 TFLOP for the four
// tiles against 8.8 for one attention over the whole latent) and quant_conv
// on the whole latent.
func EncodeFLOPs(cfg Config, t TileOptions, h, w int) float64 {
	if !t.EncoderTiled(h, w) {
		return EncoderFLOPs(cfg, h, w)
	}
	f := perTile(h, w, t.encoderTile(), EncoderPad, cfg.DownFactor(), false, func(th, tw int) float64 {
		f, _, _ := encoderBodyFLOPs(cfg, th, tw)
		return f
	})
	lh, lw := floorDiv(h, cfg.DownFactor()), floorDiv(w, cfg.DownFactor())
	return f + convFLOPs(2*cfg.LatentChannels, 2*cfg.LatentChannels, 1, lh, lw)
}

// perTile sums count over the padded input boxes of vaehook's tiles of an
// h×w input (see splitTiles).
func perTile(h, w, tile, pad, f int, decoder bool, count func(th, tw int) float64) float64 {
	in, _ := splitTiles(h, w, tile, pad, f, decoder)
	s := 0.0
	for _, b := range in {
		s += count(b.y1-b.y0, b.x1-b.x0)
	}
	return s
}

// DecoderFLOPs counts post_quant_conv plus the decoder on an h×w latent (the
// baseline's "VAE decode" stage).
func DecoderFLOPs(cfg Config, h, w int) float64 {
	return convFLOPs(cfg.LatentChannels, cfg.LatentChannels, 1, h, w) + decoderBodyFLOPs(cfg, h, w)
}

// decoderBodyFLOPs counts the decoder without post_quant_conv on an h×w
// latent.
func decoderBodyFLOPs(cfg Config, h, w int) float64 {
	boc, l := cfg.BlockOutChannels, cfg.LatentChannels
	top := boc[len(boc)-1]
	f := convFLOPs(l, top, 3, h, w)
	f += midFLOPs(top, h, w)
	out := top
	for i := range boc {
		in := out
		out = boc[len(boc)-1-i]
		for j := 0; j <= cfg.LayersPerBlock; j++ {
			if j > 0 {
				in = out
			}
			f += resnetFLOPs(in, out, h, w)
		}
		if i != len(boc)-1 {
			h, w = 2*h, 2*w
			f += convFLOPs(out, out, 3, h, w)
		}
	}
	f += convFLOPs(boc[0], cfg.OutChannels, 3, h, w)
	return f
}

// DecodeFLOPs counts what Decode computes on an h×w latent with tiling t:
// DecoderFLOPs untiled; tiled, post_quant_conv on the whole latent and the
// decoder on each tile's padded box (see EncodeFLOPs).
func DecodeFLOPs(cfg Config, t TileOptions, h, w int) float64 {
	if !t.DecoderTiled(h, w) {
		return DecoderFLOPs(cfg, h, w)
	}
	post := convFLOPs(cfg.LatentChannels, cfg.LatentChannels, 1, h, w)
	return post + perTile(h, w, t.decoderTile(), DecoderPad, cfg.DownFactor(), true, func(th, tw int) float64 {
		return decoderBodyFLOPs(cfg, th, tw)
	})
}

// DecodeUpsamplerFLOPs is UpsamplerFLOPs for Decode with tiling t (per
// tile when it tiles).
func DecodeUpsamplerFLOPs(cfg Config, t TileOptions, h, w int) float64 {
	if !t.DecoderTiled(h, w) {
		return UpsamplerFLOPs(cfg, h, w)
	}
	return perTile(h, w, t.decoderTile(), DecoderPad, cfg.DownFactor(), true, func(th, tw int) float64 {
		return UpsamplerFLOPs(cfg, th, tw)
	})
}

// UpsamplerFLOPs counts the decoder's upsampler convolutions on an h×w
// latent (part of DecoderFLOPs). Where they run as phase convolutions
// (nn.Conv2d.ForwardUpsample2x) they execute 4/9 of this count.
func UpsamplerFLOPs(cfg Config, h, w int) float64 {
	boc := cfg.BlockOutChannels
	f := 0.0
	for i := 0; i < len(boc)-1; i++ {
		h, w = 2*h, 2*w
		c := boc[len(boc)-1-i]
		f += convFLOPs(c, c, 3, h, w)
	}
	return f
}
