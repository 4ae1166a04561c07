package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"

	"golang.org/x/image/webp"
)

// Image is a decoded picture: colour, optional alpha and the metadata to
// write back.
type Image struct {
	RGB *RGB8
	// Alpha is the alpha plane (non-premultiplied), nil when the source has
	// no alpha channel.
	Alpha *Gray8
	// Format is the source format: "png", "jpeg" or "webp".
	Format string
	// BitDepth is the source's bits per channel (8 or 16); 16-bit sources are
	// reduced to their high byte.
	BitDepth int
	// Orientation is the EXIF orientation found in the source (1-8, 0 if
	// none); it has been applied to the pixels.
	Orientation int
	// EXIF is the TIFF-structured EXIF block (starting "II*\x00" or
	// "MM\x00*", without the JPEG "Exif\x00\x00" prefix), with the
	// orientation tag reset to 1; nil if none.
	EXIF []byte
	// ICC is the embedded ICC colour profile, nil if none.
	ICC []byte
}

// Limits bounds what Decode accepts, checked on the header before any pixel
// is decoded (decompression bombs).
type Limits struct {
	MaxPixels int64 // width*height
	MaxWidth  int
	MaxHeight int
	MaxBytes  int64 // size of the encoded file
}

// DefaultLimits are Pillow's MAX_IMAGE_PIXELS (89,478,485 pixels, where
// Pillow warns), sides up to 65,535 and files up to 1 GiB.
func DefaultLimits() Limits {
	return Limits{MaxPixels: 89478485, MaxWidth: 65535, MaxHeight: 65535, MaxBytes: 1 << 30}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPixels <= 0 {
		l.MaxPixels = d.MaxPixels
	}
	if l.MaxWidth <= 0 {
		l.MaxWidth = d.MaxWidth
	}
	if l.MaxHeight <= 0 {
		l.MaxHeight = d.MaxHeight
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	return l
}

// ErrTooLarge is wrapped by the errors of images refused by Limits.
var ErrTooLarge = errors.New("image too large")

// ErrFormat is wrapped by the errors of data that is no supported image.
var ErrFormat = errors.New("unsupported or unknown image format")

// sniff names the format from the magic bytes.
func sniff(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(b, []byte{0xff, 0xd8}):
		return "jpeg"
	case len(b) >= 12 && string(b[0:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "webp"
	}
	return ""
}

// ReadFile decodes the image file at path (see Decode).
func ReadFile(path string, lim Limits) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := Decode(f, lim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// Decode reads a PNG, JPEG or WebP image: header and size checks first, then
// pixels, metadata (EXIF, ICC) and the EXIF orientation.
func Decode(r io.Reader, lim Limits) (*Image, error) {
	lim = lim.withDefaults()
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("imageio: read: %w", err)
	}
	if int64(len(data)) > lim.MaxBytes {
		return nil, fmt.Errorf("imageio: file larger than %d bytes: %w", lim.MaxBytes, ErrTooLarge)
	}
	format := sniff(data)
	if format == "" {
		return nil, fmt.Errorf("imageio: not a PNG, JPEG or WebP file: %w", ErrFormat)
	}
	cfg, err := decodeConfig(format, data)
	if err != nil {
		return nil, fmt.Errorf("imageio: %s header: %w", format, corrupt(err))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("imageio: %s: empty image %dx%d", format, cfg.Width, cfg.Height)
	}
	if cfg.Width > lim.MaxWidth || cfg.Height > lim.MaxHeight || int64(cfg.Width)*int64(cfg.Height) > lim.MaxPixels {
		return nil, fmt.Errorf("imageio: %s is %dx%d, over the limit (%dx%d, %d pixels): %w",
			format, cfg.Width, cfg.Height, lim.MaxWidth, lim.MaxHeight, lim.MaxPixels, ErrTooLarge)
	}
	var meta metadata
	switch format {
	case "png":
		meta, err = pngMetadata(data)
	case "jpeg":
		meta, err = jpegMetadata(data)
	case "webp":
		meta, err = webpMetadata(data)
	}
	if err != nil {
		return nil, fmt.Errorf("imageio: %s: %w", format, err)
	}
	var m image.Image
	switch format {
	case "png":
		m, err = png.Decode(bytes.NewReader(data))
	case "jpeg":
		m, err = jpeg.Decode(bytes.NewReader(data))
	case "webp":
		m, err = webp.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("imageio: decode %s: %w", format, corrupt(err))
	}
	b := m.Bounds()
	if b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return nil, fmt.Errorf("imageio: decode %s: %dx%d pixels for a %dx%d header", format, b.Dx(), b.Dy(), cfg.Width, cfg.Height)
	}
	img := split(m)
	if meta.noAlpha {
		img.Alpha = nil
	}
	img.Format = format
	img.BitDepth = 8
	if meta.depth16 {
		img.BitDepth = 16
	}
	img.ICC = meta.icc
	if meta.exif != nil {
		img.EXIF = append([]byte(nil), meta.exif...)
		if o, off, ok := exifOrientation(img.EXIF); ok {
			img.Orientation = o
			if o >= 2 && o <= 8 {
				img.RGB, img.Alpha = orient(img.RGB, img.Alpha, o)
			}
			setExifOrientation(img.EXIF, off, 1)
		}
	}
	return img, nil
}

func decodeConfig(format string, data []byte) (image.Config, error) {
	r := bytes.NewReader(data)
	switch format {
	case "png":
		return png.DecodeConfig(r)
	case "jpeg":
		return jpeg.DecodeConfig(r)
	default:
		return webp.DecodeConfig(r)
	}
}

// corrupt makes the decoders' EOF errors say what they mean.
func corrupt(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("truncated file (%w)", err)
	}
	return fmt.Errorf("truncated, corrupt or unsupported data (%w)", err)
}

// split converts any decoded image to RGB8 + optional alpha, without
// premultiplication (like Pillow's convert("RGB"), which drops alpha). 16-bit
// channels keep their high byte.
func split(m image.Image) *Image {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	rgb := NewRGB8(w, h)
	var alpha *Gray8
	needAlpha := func() {
		if alpha == nil {
			alpha = NewGray8(w, h)
			for i := range alpha.Pix {
				alpha.Pix[i] = 255
			}
		}
	}
	switch s := m.(type) {
	case *image.NRGBA:
		needAlpha()
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+4*w]
			for x := 0; x < w; x++ {
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = row[4*x], row[4*x+1], row[4*x+2]
				if a := row[4*x+3]; a != 255 {
					needAlpha()
					alpha.Pix[y*w+x] = a
				}
			}
		}
	case *image.NRGBA64:
		needAlpha()
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+8*w]
			for x := 0; x < w; x++ {
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = row[8*x], row[8*x+2], row[8*x+4]
				if a := row[8*x+6]; a != 255 || row[8*x+7] != 255 {
					needAlpha()
					alpha.Pix[y*w+x] = a
				}
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := s.Pix[y*s.Stride+x]
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = v, v, v
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := s.Pix[y*s.Stride+2*x]
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = v, v, v
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi, ci := s.YOffset(x+b.Min.X, y+b.Min.Y), s.COffset(x+b.Min.X, y+b.Min.Y)
				r, g, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = r, g, bb
			}
		}
	default:
		// Paletted, RGBA (opaque PNGs), RGBA64, CMYK, NYCbCrA, ...
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := m.At(x+b.Min.X, y+b.Min.Y)
				var r, g, bb, a uint8
				switch cc := c.(type) {
				case color.NRGBA:
					r, g, bb, a = cc.R, cc.G, cc.B, cc.A
				case color.NRGBA64:
					r, g, bb, a = uint8(cc.R>>8), uint8(cc.G>>8), uint8(cc.B>>8), uint8(cc.A>>8)
				case color.RGBA64:
					n := color.NRGBA64Model.Convert(cc).(color.NRGBA64)
					r, g, bb, a = uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8), uint8(n.A>>8)
				default:
					n := color.NRGBAModel.Convert(c).(color.NRGBA)
					r, g, bb, a = n.R, n.G, n.B, n.A
				}
				o := 3 * (y*w + x)
				rgb.Pix[o], rgb.Pix[o+1], rgb.Pix[o+2] = r, g, bb
				if a != 255 {
					needAlpha()
					alpha.Pix[y*w+x] = a
				}
			}
		}
	}
	return &Image{RGB: rgb, Alpha: alpha}
}
