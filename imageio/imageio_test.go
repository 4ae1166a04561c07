package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

const refDir = "../testdata/osediff-tiny/ref"

// tiny is a 3x2 image with distinct pixels: value (10*x + 100*y, x, y).
func tiny() *RGB8 { return blocks(1) }

// blocks is tiny() with every pixel grown to an s x s block; for s > 1 the
// blocks are grey (R = G = B) so that lossy JPEG keeps them close.
func blocks(s int) *RGB8 {
	m := NewRGB8(3*s, 2*s)
	for y := 0; y < 2*s; y++ {
		for x := 0; x < 3*s; x++ {
			bx, by := x/s, y/s
			o := 3 * (y*3*s + x)
			v := uint8(10*bx + 100*by)
			m.Pix[o], m.Pix[o+1], m.Pix[o+2] = v, uint8(bx), uint8(by)
			if s > 1 {
				m.Pix[o+1], m.Pix[o+2] = v, v
			}
		}
	}
	return m
}

// tiffExif builds a minimal TIFF EXIF block with IFD0 = {Orientation: o}.
func tiffExif(bo binary.AppendByteOrder, o int) []byte {
	var b []byte
	if bo == binary.LittleEndian {
		b = []byte("II*\x00")
	} else {
		b = []byte("MM\x00*")
	}
	b = bo.AppendUint32(b, 8)
	b = bo.AppendUint16(b, 2) // two entries: ImageDescription-like filler, Orientation
	b = bo.AppendUint16(b, 0x011a)
	b = bo.AppendUint16(b, 3)
	b = bo.AppendUint32(b, 1)
	b = bo.AppendUint32(b, 72)
	b = bo.AppendUint16(b, 0x0112)
	b = bo.AppendUint16(b, 3)
	b = bo.AppendUint32(b, 1)
	b = bo.AppendUint16(b, uint16(o))
	b = bo.AppendUint16(b, 0)
	return bo.AppendUint32(b, 0)
}

func TestDecodeReferencePNG(t *testing.T) {
	img, err := ReadFile(filepath.Join(refDir, "case_main_lq.png"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if img.RGB.W != 40 || img.RGB.H != 32 || img.Format != "png" || img.BitDepth != 8 || img.Alpha != nil {
		t.Fatalf("got %dx%d %s depth %d alpha %v", img.RGB.W, img.RGB.H, img.Format, img.BitDepth, img.Alpha != nil)
	}
	// Cross-check the pixels with the standard decoder.
	f, _ := os.Open(filepath.Join(refDir, "case_main_lq.png"))
	defer f.Close()
	m, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 32; y++ {
		for x := 0; x < 40; x++ {
			r, g, b, _ := m.At(x, y).RGBA()
			o := 3 * (y*40 + x)
			if img.RGB.Pix[o] != uint8(r>>8) || img.RGB.Pix[o+1] != uint8(g>>8) || img.RGB.Pix[o+2] != uint8(b>>8) {
				t.Fatalf("pixel %d,%d differs", x, y)
			}
		}
	}
}

// orientedWant gives the displayed image of tiny() stored with orientation o.
func orientedWant(o int) (w, h int, at func(x, y int) (int, int)) {
	const W, H = 3, 2
	switch o {
	case 2:
		return W, H, func(x, y int) (int, int) { return W - 1 - x, y }
	case 3:
		return W, H, func(x, y int) (int, int) { return W - 1 - x, H - 1 - y }
	case 4:
		return W, H, func(x, y int) (int, int) { return x, H - 1 - y }
	case 5:
		return H, W, func(x, y int) (int, int) { return y, x }
	case 6:
		return H, W, func(x, y int) (int, int) { return y, H - 1 - x }
	case 7:
		return H, W, func(x, y int) (int, int) { return W - 1 - y, H - 1 - x }
	case 8:
		return H, W, func(x, y int) (int, int) { return W - 1 - y, x }
	}
	return W, H, func(x, y int) (int, int) { return x, y }
}

func TestEXIFOrientation(t *testing.T) {
	// Orientation 6 means "rotate 90° clockwise to display": the stored
	// left column becomes the displayed top row, bottom pixel first.
	{
		src := &Image{RGB: tiny(), EXIF: tiffExif(binary.BigEndian, 6)}
		var buf bytes.Buffer
		if err := Encode(&buf, src, "png", 0); err != nil {
			t.Fatal(err)
		}
		img, err := Decode(&buf, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		// Displayed 2x3; top-left = stored (0,1) = (100,0,1); top-right = stored (0,0).
		if img.RGB.W != 2 || img.RGB.H != 3 || img.RGB.Pix[0] != 100 || img.RGB.Pix[3] != 0 {
			t.Fatalf("orientation 6: %dx%d %v", img.RGB.W, img.RGB.H, img.RGB.Pix)
		}
	}
	for _, format := range []string{"png", "jpg", "webp"} {
		for _, bo := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
			for o := 1; o <= 8; o++ {
				const s = 8
				src := &Image{RGB: blocks(s), EXIF: tiffExif(bo, o)}
				var buf bytes.Buffer
				if err := Encode(&buf, src, format, 100); err != nil {
					t.Fatal(err)
				}
				img, err := Decode(&buf, Limits{})
				if err != nil {
					t.Fatalf("%s o=%d: %v", format, o, err)
				}
				if img.Orientation != o {
					t.Fatalf("%s o=%d: Orientation %d", format, o, img.Orientation)
				}
				if got, _, ok := exifOrientation(img.EXIF); !ok || got != 1 {
					t.Fatalf("%s o=%d: kept EXIF orientation %d, want reset to 1", format, o, got)
				}
				w, h, at := orientedWant(o)
				if img.RGB.W != w*s || img.RGB.H != h*s {
					t.Fatalf("%s o=%d: %dx%d, want %dx%d", format, o, img.RGB.W, img.RGB.H, w*s, h*s)
				}
				tol := 0
				if format == "jpg" {
					tol = 2 // lossy; centres of flat grey blocks
				}
				for y := 0; y < h; y++ {
					for x := 0; x < w; x++ {
						sx, sy := at(x, y)
						want := 10*sx + 100*sy
						p := 3 * ((y*s+s/2)*w*s + x*s + s/2)
						if d := int(img.RGB.Pix[p]) - want; d > tol || d < -tol {
							t.Fatalf("%s o=%d: block (%d,%d) red %d, want %d", format, o, x, y, img.RGB.Pix[p], want)
						}
					}
				}
			}
		}
	}
}

func TestRoundTripMetadataAndAlpha(t *testing.T) {
	icc := bytes.Repeat([]byte("profile-bytes-"), 6000) // 84 kB: two JPEG APP2 segments
	exif := tiffExif(binary.LittleEndian, 1)
	rgb := NewRGB8(17, 9)
	alpha := NewGray8(17, 9)
	for i := range rgb.Pix {
		rgb.Pix[i] = uint8(i * 7)
	}
	for i := range alpha.Pix {
		alpha.Pix[i] = uint8(i * 3)
	}
	cases := []struct {
		format   string
		alpha    bool
		lossless bool
	}{
		{"png", true, true},
		{"png", false, true},
		{"webp", true, true},
		{"webp", false, true},
		{"jpg", false, false},
	}
	for _, c := range cases {
		src := &Image{RGB: rgb, EXIF: exif, ICC: icc}
		if c.alpha {
			src.Alpha = alpha
		}
		var buf bytes.Buffer
		if err := Encode(&buf, src, c.format, 90); err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		img, err := Decode(bytes.NewReader(buf.Bytes()), Limits{})
		if err != nil {
			t.Fatalf("%s alpha=%v: %v", c.format, c.alpha, err)
		}
		if !bytes.Equal(img.ICC, icc) || !bytes.Equal(img.EXIF, exif) {
			t.Errorf("%s: metadata lost (icc %d bytes, exif %d bytes)", c.format, len(img.ICC), len(img.EXIF))
		}
		if (img.Alpha != nil) != c.alpha {
			t.Errorf("%s alpha=%v: decoded alpha %v", c.format, c.alpha, img.Alpha != nil)
		}
		if c.lossless {
			if !bytes.Equal(img.RGB.Pix, rgb.Pix) {
				t.Errorf("%s: colour not lossless", c.format)
			}
			if c.alpha && !bytes.Equal(img.Alpha.Pix, alpha.Pix) {
				t.Errorf("%s: alpha not lossless", c.format)
			}
		}
	}
}

func Test16BitPNG(t *testing.T) {
	m := image.NewNRGBA64(image.Rect(0, 0, 2, 1))
	m.SetNRGBA64(0, 0, color.NRGBA64{R: 0x12ff, G: 0xff00, B: 0x0001, A: 0xffff})
	m.SetNRGBA64(1, 0, color.NRGBA64{R: 0x8080, G: 0x0000, B: 0xfffe, A: 0x4000})
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint8{0x12, 0xff, 0x00, 0x80, 0x00, 0xff}
	if img.BitDepth != 16 || !bytes.Equal(img.RGB.Pix, want) || img.Alpha == nil || img.Alpha.Pix[0] != 0xff || img.Alpha.Pix[1] != 0x40 {
		t.Fatalf("depth %d rgb %x alpha %v", img.BitDepth, img.RGB.Pix, img.Alpha)
	}
}

func TestPalettedTransparency(t *testing.T) {
	p := image.NewPaletted(image.Rect(0, 0, 2, 1), color.Palette{color.NRGBA{10, 20, 30, 255}, color.NRGBA{40, 50, 60, 0}})
	p.Pix[1] = 1
	var buf bytes.Buffer
	if err := png.Encode(&buf, p); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Alpha == nil || img.Alpha.Pix[0] != 255 || img.Alpha.Pix[1] != 0 || img.RGB.Pix[0] != 10 {
		t.Fatalf("alpha %v rgb %v", img.Alpha, img.RGB.Pix)
	}
}

// bombPNG is a PNG signature + IHDR claiming w x h, and nothing else.
func bombPNG(w, h uint32) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 2, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, 13)
	start := len(b)
	b = append(b, "IHDR"...)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

func TestDecodeRefusesBadInput(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(refDir, "case_main_lq.png"))
	if err != nil {
		t.Fatal(err)
	}
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, image.NewGray(image.Rect(0, 0, 64, 64)), nil); err != nil {
		t.Fatal(err)
	}
	var wp bytes.Buffer
	if err := Encode(&wp, &Image{RGB: NewRGB8(40, 40)}, "webp", 0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		lim  Limits
		is   error  // errors.Is target, or nil
		msg  string // substring of the message
	}{
		{"bomb", bombPNG(100000, 100000), Limits{}, ErrTooLarge, "over the limit"},
		{"wide", bombPNG(70000, 1), Limits{}, ErrTooLarge, "over the limit"},
		{"limits", good, Limits{MaxPixels: 1000}, ErrTooLarge, "40x32"},
		{"bytes", good, Limits{MaxBytes: 100}, ErrTooLarge, "larger than"},
		{"truncated png", good[:len(good)/2], Limits{}, nil, "truncated"},
		{"truncated png header", good[:20], Limits{}, nil, "png header"},
		{"truncated jpeg", jpg.Bytes()[:jpg.Len()/2], Limits{}, nil, "jpeg"},
		{"truncated webp", wp.Bytes()[:wp.Len()/2], Limits{}, nil, "webp"},
		{"garbage", []byte("hello, world, not an image"), Limits{}, ErrFormat, "not a PNG"},
		{"empty", nil, Limits{}, ErrFormat, "not a PNG"},
		{"corrupt png", append(append([]byte(nil), good[:60]...), bytes.Repeat([]byte{0xAA}, 200)...), Limits{}, nil, "png"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := Decode(bytes.NewReader(c.data), c.lim)
			if err == nil {
				t.Fatalf("no error (got %dx%d)", img.RGB.W, img.RGB.H)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	img := &Image{RGB: tiny()}
	for _, f := range []string{"png", "jpg", "webp"} {
		path := filepath.Join(dir, "out."+f)
		if err := WriteFileAtomic(path, img, f, 0); err != nil {
			t.Fatal(err)
		}
		back, err := ReadFile(path, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if back.RGB.W != 3 || back.RGB.H != 2 || FormatFromPath(path) != f {
			t.Fatalf("%s: %dx%d", f, back.RGB.W, back.RGB.H)
		}
	}
	// A failing encode leaves neither the target nor a temporary file.
	bad := filepath.Join(dir, "bad.png")
	if err := WriteFileAtomic(bad, img, "gif", 0); err == nil {
		t.Fatal("unknown format: no error")
	}
	if err := WriteFileAtomic(filepath.Join(dir, "bad2.png"), &Image{RGB: &RGB8{W: 5, H: 5}}, "png", 0); err == nil {
		t.Fatal("inconsistent image: no error")
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 3 {
		t.Fatalf("directory holds %v, want only the three outputs", names)
	}
	if st, err := os.Stat(filepath.Join(dir, "out.png")); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
}

func TestTensorConversions(t *testing.T) {
	m := NewRGB8(2, 1)
	copy(m.Pix, []uint8{0, 128, 255, 1, 2, 3})
	x := ToTensor(m)
	if s := x.Shape(); !tensor.SameShape(s, []int{1, 3, 1, 2}) {
		t.Fatalf("shape %v", s)
	}
	// Planar: R plane (0, 1), G plane (128, 2), B plane (255, 3), v/255 in float32.
	want := []float32{0, float32(1) / 255, float32(128) / 255, float32(2) / 255, 1, float32(3) / 255}
	for i, v := range x.Data() {
		if v != want[i] {
			t.Fatalf("ToTensor[%d] = %v, want %v", i, v, want[i])
		}
	}
	cases := []struct {
		in   float32
		want uint8
	}{
		{0, 0}, {1, 255}, {0.5, 127}, {0.999, 254}, {-0.25, 0}, {1.5, 255},
		{float32(math.NaN()), 0}, {float32(200) / 255, 200}, {float32(3) / 255, 3},
	}
	for _, c := range cases {
		y := tensor.FromData([]float32{c.in, c.in, c.in}, 1, 3, 1, 1)
		got, err := FromTensor(y)
		if err != nil {
			t.Fatal(err)
		}
		if got.Pix[0] != c.want {
			t.Errorf("FromTensor(%v) = %d, want %d (truncation of x*255)", c.in, got.Pix[0], c.want)
		}
	}
	if _, err := FromTensor(tensor.New(1, 4, 2, 2)); err == nil {
		t.Error("4 channels: no error")
	}
}
