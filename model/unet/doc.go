// Package unet is the Stable Diffusion 2.1 denoiser: diffusers'
// UNet2DConditionModel (v0.25.0) with its building blocks (Timesteps +
// TimestepEmbedding, ResnetBlock2D, Transformer2DModel with linear
// projections and BasicTransformerBlock, Attention, GEGLU FeedForward,
// Downsample2D, Upsample2D, the down/mid/up blocks), configured only by the
// model's unet/config.json, so the same code runs the tiny ground-truth model
// and SD 2.1-base.
//
// Layout: activations are NCHW float32 as in PyTorch; the transformer works on
// token-major [N, H·W, C] rows. Weight fields carry `weights:"..."` tags that
// spell the diffusers safetensors keys (conv_in.weight,
// down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight, ...), so
// checkpoint.Bind fills a model made by New straight from
// unet/diffusion_pytorch_model.safetensors (Load does both). OSEDiff's LoRA is
// merged into the bound weights (lora.MergeOSEDiff on checkpoint.Params); the
// forward pass knows nothing about it.
//
// Heads: diffusers v0.25 reads attention_head_dim as the NUMBER of heads per
// block (a historical naming slip); the head width is channels / heads.
package unet
