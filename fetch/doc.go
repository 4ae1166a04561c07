// Package fetch downloads the files the OSEDiff pipeline needs into a local
// cache folder: the Stable Diffusion 2.1-base components in the diffusers
// layout (from a Hugging Face repo id, fp16 variant by default), OSEDiff's
// LoRA checkpoint osediff.pkl (optionally osediff_face.pkl), the RAM tagger
// ram_swin_large_14m.pth and its DAPE LoRA DAPE.pth.
//
// Layout under the cache folder ($OSEDIFF_HOME, default
// os.UserCacheDir()/osediff), see DefaultPaths:
//
//	models/stable-diffusion-2-1-base/   a diffusers folder (model_index.json,
//	                                    scheduler/, tokenizer/, text_encoder/,
//	                                    unet/, vae/)
//	weights/osediff.pkl                 (and osediff_face.pkl)
//	weights/ram_swin_large_14m.pth
//	weights/DAPE.pth
//	downloads.json                      size and sha256 of every stored file
//
// Each file is streamed into "<file>.part"; an interrupted download resumes
// from it with an HTTP Range request (retried a few times within one call, or
// on the next call). The finished file is checked against its size and
// checksums (sha256, or git's blob SHA-1 for files published in a git
// repository) where the manifest in this package knows them; otherwise its
// sha256 is recorded in downloads.json and checked on every later run. Only a
// verified file is renamed into place, so a file at its final path is always
// whole. A file that fails verification is deleted and fetched once more.
//
// Every URL is configurable (Options). The library never prints: progress
// goes to Options.Progress (TextProgress renders a bar for a CLI), and a host
// that cannot be reached gives one *OfflineError with a single-line message.
package fetch
