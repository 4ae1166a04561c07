// Package vae is the Stable Diffusion VAE, diffusers' AutoencoderKL (v0.25.0),
// configured only from its config.json: Encoder (conv_in, DownEncoderBlock2D
// with stride-2 downsampling after an asymmetric zero pad, UNetMidBlock2D with
// a single-head self-attention, conv_norm_out, conv_out), quant_conv,
// post_quant_conv and Decoder (conv_in, mid block, UpDecoderBlock2D with
// nearest ×2 upsampling, conv_norm_out, conv_out).
//
// Tiling follows OSEDiff's my_utils/vaehook.py (the exact, non-fast mode):
// when enabled and the input's longer side exceeds 2·pad + tile, the input is
// cut into padded tiles that run through the network in lockstep, one layer at
// a time. Convolutions, residuals, the mid-block attention and the samplers act
// on each tile alone; every GroupNorm normalises with statistics shared by all
// tiles (the pixel-count-weighted means of the per-tile biased mean and
// variance, 32 groups, eps 1e-6). Each tile's core is pasted into the output.
// Untiled is the same code with one tile, and then GroupNorm is exactly
// torch.nn.GroupNorm.
//
// Layers consume their input: a Forward may overwrite the tensors of the Tiles
// it is given and drops them as soon as they are dead, so that a large image
// keeps only the live activations of its tiles.
package vae
