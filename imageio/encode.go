package imageio

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/HugoSmits86/nativewebp"
)

// DefaultJPEGQuality is used when Encode gets quality <= 0 for JPEG.
const DefaultJPEGQuality = 95

// FormatFromPath maps a file extension to an output format: "png", "jpg" or
// "webp" ("" when unknown).
func FormatFromPath(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		return "png"
	case ".jpg", ".jpeg":
		return "jpg"
	case ".webp":
		return "webp"
	}
	return ""
}

// ToImage returns img as an image.NRGBA (alpha 255 where img has no alpha).
func (img *Image) ToImage() (*image.NRGBA, error) {
	if err := img.check(); err != nil {
		return nil, err
	}
	w, h := img.RGB.W, img.RGB.H
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		copy(m.Pix[4*i:4*i+3], img.RGB.Pix[3*i:3*i+3])
		m.Pix[4*i+3] = 255
		if img.Alpha != nil {
			m.Pix[4*i+3] = img.Alpha.Pix[i]
		}
	}
	return m, nil
}

func (img *Image) check() error {
	if img == nil || img.RGB == nil || img.RGB.W <= 0 || img.RGB.H <= 0 || len(img.RGB.Pix) != 3*img.RGB.W*img.RGB.H {
		return errors.New("imageio: empty or inconsistent image")
	}
	if a := img.Alpha; a != nil && (a.W != img.RGB.W || a.H != img.RGB.H || len(a.Pix) != a.W*a.H) {
		return fmt.Errorf("imageio: alpha plane %dx%d for a %dx%d image", a.W, a.H, img.RGB.W, img.RGB.H)
	}
	return nil
}

// Encode writes img as "png", "jpg" (or "jpeg") or "webp". quality is the
// JPEG quality (1-100, <= 0 for DefaultJPEGQuality); PNG and WebP are
// lossless (the pure-Go WebP encoder writes VP8L only) and ignore it. EXIF
// and ICC are written back: PNG eXIf/iCCP chunks, JPEG APP1/APP2 segments,
// WebP EXIF/ICCP chunks. JPEG has no alpha: the alpha plane is dropped there.
func Encode(w io.Writer, img *Image, format string, quality int) error {
	m, err := img.ToImage()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	switch strings.ToLower(format) {
	case "png":
		var src image.Image = m
		if img.Alpha == nil {
			src = opaqueRGBA(m)
		}
		enc := png.Encoder{CompressionLevel: png.DefaultCompression}
		if err := enc.Encode(&buf, src); err != nil {
			return fmt.Errorf("imageio: encode png: %w", err)
		}
		out, err := pngWithMetadata(buf.Bytes(), img.EXIF, img.ICC)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	case "jpg", "jpeg":
		if quality <= 0 {
			quality = DefaultJPEGQuality
		}
		if quality > 100 {
			return fmt.Errorf("imageio: JPEG quality %d out of range 1-100", quality)
		}
		if err := jpeg.Encode(&buf, opaqueRGBA(m), &jpeg.Options{Quality: quality}); err != nil {
			return fmt.Errorf("imageio: encode jpeg: %w", err)
		}
		out, err := jpegWithMetadata(buf.Bytes(), img.EXIF, img.ICC)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	case "webp":
		if img.RGB.W > 16384 || img.RGB.H > 16384 {
			return fmt.Errorf("imageio: WebP is limited to 16384x16384, image is %dx%d", img.RGB.W, img.RGB.H)
		}
		var src image.Image = m
		if img.Alpha == nil {
			src = opaqueRGBA(m)
		}
		if err := nativewebp.Encode(&buf, src, nil); err != nil {
			return fmt.Errorf("imageio: encode webp: %w", err)
		}
		out, err := webpWithMetadata(buf.Bytes(), img.RGB.W, img.RGB.H, img.Alpha != nil, img.EXIF, img.ICC)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	return fmt.Errorf("imageio: output format %q: want png, jpg or webp", format)
}

// opaqueRGBA reinterprets an all-opaque NRGBA as RGBA (identical bytes), so
// that the encoders write no alpha channel.
func opaqueRGBA(m *image.NRGBA) *image.RGBA {
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = 255
	}
	return &image.RGBA{Pix: m.Pix, Stride: m.Stride, Rect: m.Rect}
}

// pngChunk appends one PNG chunk (length, type, data, CRC).
func pngChunk(dst []byte, typ string, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	start := len(dst)
	dst = append(dst, typ...)
	dst = append(dst, data...)
	return binary.BigEndian.AppendUint32(dst, crc32.ChecksumIEEE(dst[start:]))
}

// pngWithMetadata inserts iCCP and eXIf right after IHDR (before PLTE and
// IDAT, where both are allowed).
func pngWithMetadata(p, exif, icc []byte) ([]byte, error) {
	if exif == nil && icc == nil {
		return p, nil
	}
	const ihdrEnd = 8 + 8 + 13 + 4
	if len(p) < ihdrEnd || string(p[12:16]) != "IHDR" {
		return nil, errors.New("imageio: unexpected PNG encoder output")
	}
	out := append([]byte(nil), p[:ihdrEnd]...)
	if icc != nil {
		var z bytes.Buffer
		zw := zlib.NewWriter(&z)
		zw.Write(icc)
		zw.Close()
		data := append([]byte("ICC Profile\x00\x00"), z.Bytes()...)
		out = pngChunk(out, "iCCP", data)
	}
	if exif != nil {
		out = pngChunk(out, "eXIf", exif)
	}
	return append(out, p[ihdrEnd:]...), nil
}

// jpegWithMetadata inserts APP1 (Exif) and APP2 (ICC_PROFILE, split into
// numbered segments) after SOI. An EXIF block over one segment's 65,527
// bytes cannot be stored and is left out.
func jpegWithMetadata(j, exif, icc []byte) ([]byte, error) {
	if exif == nil && icc == nil {
		return j, nil
	}
	if len(j) < 2 || j[0] != 0xff || j[1] != 0xd8 {
		return nil, errors.New("imageio: unexpected JPEG encoder output")
	}
	seg := func(dst []byte, marker byte, parts ...[]byte) []byte {
		n := 2
		for _, p := range parts {
			n += len(p)
		}
		dst = append(dst, 0xff, marker, byte(n>>8), byte(n))
		for _, p := range parts {
			dst = append(dst, p...)
		}
		return dst
	}
	out := append([]byte(nil), j[:2]...)
	const maxSeg = 65535 - 2
	if exif != nil && len(exif)+6 <= maxSeg {
		out = seg(out, 0xe1, []byte("Exif\x00\x00"), exif)
	}
	if len(icc) > 0 {
		const chunk = maxSeg - 14
		n := (len(icc) + chunk - 1) / chunk
		if n > 255 {
			return nil, fmt.Errorf("imageio: ICC profile of %d bytes too large for JPEG", len(icc))
		}
		for i := 0; i < n; i++ {
			part := icc[i*chunk : min((i+1)*chunk, len(icc))]
			out = seg(out, 0xe2, []byte("ICC_PROFILE\x00"), []byte{byte(i + 1), byte(n)}, part)
		}
	}
	return append(out, j[2:]...), nil
}

// webpWithMetadata rewraps a simple-format WebP (one VP8L or VP8 chunk) as
// the extended format (VP8X) with ICCP before and EXIF after the image data.
func webpWithMetadata(b []byte, w, h int, alpha bool, exif, icc []byte) ([]byte, error) {
	if exif == nil && icc == nil {
		return b, nil
	}
	if len(b) < 20 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return nil, errors.New("imageio: unexpected WebP encoder output")
	}
	payload := b[12:] // the image chunk(s)
	chunk := func(dst []byte, typ string, data []byte) []byte {
		dst = append(dst, typ...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
		dst = append(dst, data...)
		if len(data)%2 == 1 {
			dst = append(dst, 0)
		}
		return dst
	}
	var flags byte
	if icc != nil {
		flags |= 0x20
	}
	if alpha {
		flags |= 0x10
	}
	if exif != nil {
		flags |= 0x08
	}
	vp8x := []byte{flags, 0, 0, 0, byte(w - 1), byte((w - 1) >> 8), byte((w - 1) >> 16), byte(h - 1), byte((h - 1) >> 8), byte((h - 1) >> 16)}
	body := []byte("WEBP")
	body = chunk(body, "VP8X", vp8x)
	if icc != nil {
		body = chunk(body, "ICCP", icc)
	}
	body = append(body, payload...)
	if exif != nil {
		body = chunk(body, "EXIF", exif)
	}
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...)
	return append(out, body...), nil
}

// WriteFileAtomic encodes img into a temporary file in path's directory,
// syncs it and renames it over path, so that path is either absent, the old
// file or the complete new one, whatever happens. The file gets mode 0644.
func WriteFileAtomic(path string, img *Image, format string, quality int) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = Encode(bw, img, format, quality); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// Make the rename itself durable.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
