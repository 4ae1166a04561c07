// Package osediff is the OSEDiff one-step super-resolution pipeline: Load the
// models once (SD 2.1-base UNet, VAE and CLIP text encoder with OSEDiff's LoRA
// merged, optionally the DAPE tagger), then Upscale images many times. It
// reproduces the reference (cswry/OSEDiff test_osediff.py) step by step:
// Pillow-exact pre-processing, the prompt from DAPE tags, VAE encode, one UNet
// call at t=999 (latent tiles for large inputs), the x0 formula, VAE decode
// (tiled for large inputs) and the AdaIN or wavelet colour fix.
package osediff
