// Package imageio reads and writes the images of the upscaler: PNG (8 and
// 16-bit), JPEG and WebP in, PNG, JPEG and (where possible) WebP out.
//
// Decoding is defensive: the header is read first (image.DecodeConfig) and
// absurd sizes are refused before any pixel is decoded (Limits: decompression
// bombs); truncated or corrupt files give a clear error. The EXIF orientation
// is applied to the pixels (and reset to 1 in the kept EXIF block); EXIF and
// ICC bytes are kept so that Encode writes them back where the format allows
// (JPEG APP1/APP2 segments, PNG eXIf/iCCP chunks, WebP EXIF/ICCP chunks).
//
// Pixels live in plain interleaved byte planes: RGB8 (3 bytes per pixel) and
// an optional Gray8 alpha plane, carried separately because the model only
// sees colour. 16-bit sources are reduced to their high byte, as Pillow's
// Image.open(...).convert("RGB") does. ToTensor / FromTensor convert to and
// from the [1,3,H,W] float32 tensors of the pipeline exactly as torchvision's
// ToTensor (v/255) and ToPILImage (truncating x*255) do.
package imageio
