// Package clip is the text side of Stable Diffusion 2.1 as OSEDiff uses it:
// the CLIP BPE tokenizer and CLIPTextModel (transformers 4.28,
// models/clip/tokenization_clip.py and modeling_clip.py).
//
// Tokenizer reads a diffusers tokenizer/ folder (vocab.json, merges.txt,
// tokenizer_config.json, special_tokens_map.json). Encode follows the
// official pipeline, which gets CLIPTokenizerFast from AutoTokenizer: special
// tokens are split off first, then NFC, whitespace runs -> " ", lower case;
// the CLIP split pattern (hand-written: Go's regexp has no lookaheads and the
// pattern needs none, but it needs leftmost-first alternation over Unicode
// classes); byte-level BPE with "</w>" on the last symbol of a word; BOS,
// EOS, truncation to MaxLength keeping EOS, padding with the pad token
// (SD 2.1: "!" = id 0). Setting Tokenizer.FixText gives the slow
// CLIPTokenizer with ftfy instead (see fixText for the part of ftfy kept).
//
// CLIPTextModel is configured by text_encoder/config.json and bound from
// text_encoder/model.safetensors (keys "text_model.*"): token + position
// embeddings, pre-LayerNorm encoder layers (causal self-attention with
// biased q/k/v/out projections, scale head_dim^-0.5; MLP fc1 -> GELU or
// quick-GELU per hidden_act -> fc2), final_layer_norm. Forward returns the
// last_hidden_state [1, L, hidden] that the UNet cross-attends to. No
// attention mask is used beyond the causal one: pad tokens are encoded like
// any other token, as in the reference pipeline.
//
// Tensors are float32, token-major ([L, hidden] rows); batch size is 1.
package clip
