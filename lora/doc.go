// Package lora merges low-rank adapters into bound base weights at load time,
// so that inference runs the plain layers with W' = W + scale·(B·A).
//
// OSEDiff's checkpoint (osediff.pkl, written by OSEDiff_gen.save_model in
// cswry/OSEDiff) holds peft v0.9.0 LoRA layers: for each target module
// `<module>.lora_A.<adapter>.weight` and `<module>.lora_B.<adapter>.weight`
// in state_dict_unet / state_dict_vae, the module names per adapter
// (unet_lora_encoder_modules -> "default_encoder", unet_lora_decoder_modules
// -> "default_decoder", unet_lora_others_modules -> "default_others",
// vae_lora_encoder_modules -> the VAE's "default_encoder") and the ranks.
// lora_alpha is not stored: the official code builds peft's LoraConfig with
// its default lora_alpha = 8, so scale = 8/rank (2 for the released rank 4).
// UNet conv_in is fine-tuned in full: `conv_in.base_layer.{weight,bias}`
// replace the base model's conv_in before its LoRA delta is added.
//
// Shapes (peft): a Linear [out,in] has A [r,in] and B [out,r]; a Conv2d
// [out,in,kh,kw] has A [r,in,kh,kw] (same kernel, stride and padding as the
// base conv) and B [out,r,1,1], and the merge is
// W' = W + scale·(B[:,:,0,0] @ A.reshape(r,-1)).reshape(W.shape) (exact
// because B is a 1×1 conv: the unmerged y = conv(x,W) + scale·B(A(x)) is
// linear in the kernel).
//
// MergeOSEDiff checks everything before it changes a single weight: every
// tensor of the checkpoint must be used (an A/B pair of a listed module, or a
// base_layer replacement), every listed module must have its pair, and every
// module must have a bound base weight of a matching shape; all problems are
// reported in one *MergeError. MergeLinear and MergeConv are the generic
// building blocks (the DAPE loralib merge of the Swin qkv calls MergeLinear
// on row views of the merged weight). The products run through
// kernels.Sgemm.
package lora
