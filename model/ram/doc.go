// Package ram is OSEDiff's DAPE prompt extractor: the RAM ("Recognize
// Anything", xinyu1205/recognize-anything) image tagger as OSEDiff's ram/
// folder builds it (RAMLora in ram/models/ram_lora.py), with the DAPE LoRA
// (loralib) merged into its weights at load.
//
// The model is a Swin Transformer V1 image encoder (SwinTransformer:
// PatchEmbed, BasicLayer of SwinTransformerBlock with WindowAttention,
// relative position bias and shifted windows, PatchMerging), a projection of
// its tokens to 512-wide image embeddings (image_proj) and a Query2Label
// tagging head (BertModel with cross-attention-only BertLayer): one learned
// query per tag, relu(wordvec_proj(label_embed)), attends to the image
// embeddings; fc gives one logit per tag; a tag fires when sigmoid(logit)
// beats its own threshold. The 4585 tag names and thresholds are embedded.
//
// Layout: images are NCHW float32; token sequences are token-major [L, C]
// (batch 1), tokens in row-major (y, x) order over the stage grid, exactly
// as the reference's [B, L, C] with B = 1.
//
// Weights: Load reads the RAM checkpoint ({'model': state_dict}, the keys of
// ram_swin_large_14m.pth) and optionally DAPE.pth (the 'lora_' tensors) with
// checkpoint.OpenTorch, applies the official loader's renames and merges the
// LoRA deltas in float32 (W += B·A·alpha/r; the Swin qkv MergedLinear only on
// its q and v rows) before any forward. Everything runs in float32.
package ram
