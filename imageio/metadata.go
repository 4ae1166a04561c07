package imageio

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// maxICC bounds a decompressed or reassembled ICC profile (real ones are at
// most a few MiB); a larger one is refused as corrupt (a zlib bomb in iCCP).
const maxICC = 32 << 20

// metadata is what the format parsers find besides pixels.
type metadata struct {
	exif    []byte // TIFF-structured EXIF
	icc     []byte
	depth16 bool
	noAlpha bool // the container says the image has no alpha (WebP)
}

// pngMetadata walks the PNG chunks before IDAT for IHDR's bit depth, iCCP and
// eXIf (eXIf may also follow IDAT).
func pngMetadata(b []byte) (metadata, error) {
	var m metadata
	p := 8
	for p+8 <= len(b) {
		n := int(binary.BigEndian.Uint32(b[p:]))
		typ := string(b[p+4 : p+8])
		if n < 0 || p+12+n > len(b) || n > len(b) {
			break // truncated: the pixel decoder reports it
		}
		data := b[p+8 : p+8+n]
		switch typ {
		case "IHDR":
			if n >= 9 && data[8] == 16 {
				m.depth16 = true
			}
		case "iCCP":
			i := bytes.IndexByte(data, 0)
			if i < 0 || i+2 > len(data) {
				return m, fmt.Errorf("corrupt iCCP chunk")
			}
			zr, err := zlib.NewReader(bytes.NewReader(data[i+2:]))
			if err != nil {
				return m, fmt.Errorf("corrupt iCCP chunk: %w", err)
			}
			prof, err := io.ReadAll(io.LimitReader(zr, maxICC+1))
			if err != nil {
				return m, fmt.Errorf("corrupt iCCP chunk: %w", err)
			}
			if len(prof) > maxICC {
				return m, fmt.Errorf("iCCP profile over %d bytes: %w", maxICC, ErrTooLarge)
			}
			m.icc = prof
		case "eXIf":
			m.exif = append([]byte(nil), data...)
		case "IEND":
			return m, nil
		}
		p += 12 + n
	}
	return m, nil
}

// jpegMetadata walks the JPEG markers up to the first SOS for APP1 Exif and
// APP2 ICC_PROFILE segments (a profile may be split over several, numbered).
func jpegMetadata(b []byte) (metadata, error) {
	var m metadata
	type part struct {
		seq  int
		data []byte
	}
	var icc []part
	p := 2
	for p+4 <= len(b) {
		if b[p] != 0xff {
			break // not at a marker: let the decoder judge
		}
		marker := b[p+1]
		if marker == 0xff { // fill byte
			p++
			continue
		}
		if marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01 {
			p += 2
			continue
		}
		if marker == 0xda || marker == 0xd9 { // SOS, EOI
			break
		}
		n := int(binary.BigEndian.Uint16(b[p+2:]))
		if n < 2 || p+2+n > len(b) {
			break
		}
		seg := b[p+4 : p+2+n]
		switch {
		case marker == 0xe1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) && m.exif == nil:
			m.exif = append([]byte(nil), seg[6:]...)
		case marker == 0xe2 && bytes.HasPrefix(seg, []byte("ICC_PROFILE\x00")) && len(seg) >= 14:
			icc = append(icc, part{int(seg[12]), seg[14:]})
		}
		p += 2 + n
	}
	if len(icc) > 0 {
		sort.SliceStable(icc, func(i, j int) bool { return icc[i].seq < icc[j].seq })
		var prof []byte
		for _, c := range icc {
			prof = append(prof, c.data...)
		}
		if len(prof) > maxICC {
			return m, fmt.Errorf("ICC profile over %d bytes: %w", maxICC, ErrTooLarge)
		}
		m.icc = prof
	}
	return m, nil
}

// webpMetadata walks the RIFF chunks for EXIF and ICCP.
func webpMetadata(b []byte) (metadata, error) {
	var m metadata
	alpha := false
	p := 12
	for p+8 <= len(b) {
		typ := string(b[p : p+4])
		n := int(binary.LittleEndian.Uint32(b[p+4:]))
		if n < 0 || n > len(b) || p+8+n > len(b) {
			break
		}
		data := b[p+8 : p+8+n]
		switch typ {
		case "ICCP":
			m.icc = append([]byte(nil), data...)
		case "EXIF":
			m.exif = append([]byte(nil), bytes.TrimPrefix(data, []byte("Exif\x00\x00"))...)
		case "VP8X":
			alpha = alpha || (n >= 1 && data[0]&0x10 != 0)
		case "ALPH":
			alpha = true
		case "VP8L":
			// signature 0x2f, then 14+14 bits of size and the alpha_is_used bit.
			alpha = alpha || (n >= 5 && data[4]&0x10 != 0)
		}
		p += 8 + n + n&1
	}
	m.noAlpha = !alpha
	return m, nil
}

// exifOrientation finds the Orientation tag (0x0112) of IFD0 in a TIFF
// structured EXIF block: its value (1-8) and the byte offset of the value.
func exifOrientation(e []byte) (orientation, offset int, ok bool) {
	if len(e) < 8 {
		return 0, 0, false
	}
	var bo binary.ByteOrder
	switch string(e[:4]) {
	case "II*\x00":
		bo = binary.LittleEndian
	case "MM\x00*":
		bo = binary.BigEndian
	default:
		return 0, 0, false
	}
	ifd := int64(bo.Uint32(e[4:]))
	if ifd < 8 || ifd+2 > int64(len(e)) {
		return 0, 0, false
	}
	p := int(ifd)
	count := int(bo.Uint16(e[p:]))
	p += 2
	for i := 0; i < count && p+12 <= len(e); i, p = i+1, p+12 {
		if bo.Uint16(e[p:]) != 0x0112 {
			continue
		}
		typ, n := bo.Uint16(e[p+2:]), bo.Uint32(e[p+4:])
		if typ != 3 || n != 1 { // SHORT, one value, stored in place
			return 0, 0, false
		}
		v := int(bo.Uint16(e[p+8:]))
		return v, p + 8, true
	}
	return 0, 0, false
}

// setExifOrientation writes v at the offset exifOrientation returned.
func setExifOrientation(e []byte, offset, v int) {
	if e[0] == 'I' {
		binary.LittleEndian.PutUint16(e[offset:], uint16(v))
	} else {
		binary.BigEndian.PutUint16(e[offset:], uint16(v))
	}
}

// orient applies EXIF orientation o (2-8) to the colour and alpha planes:
// 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse, 8 rotate 90 counter-clockwise (as Pillow's
// ImageOps.exif_transpose).
func orient(rgb *RGB8, a *Gray8, o int) (*RGB8, *Gray8) {
	w, h := rgb.W, rgb.H
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	// src maps a destination pixel to its source pixel.
	src := func(x, y int) (int, int) {
		switch o {
		case 2:
			return w - 1 - x, y
		case 3:
			return w - 1 - x, h - 1 - y
		case 4:
			return x, h - 1 - y
		case 5:
			return y, x
		case 6:
			return y, h - 1 - x
		case 7:
			return w - 1 - y, h - 1 - x
		case 8:
			return w - 1 - y, x
		}
		return x, y
	}
	out := NewRGB8(ow, oh)
	var oa *Gray8
	if a != nil {
		oa = NewGray8(ow, oh)
	}
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			sx, sy := src(x, y)
			si, di := sy*w+sx, y*ow+x
			copy(out.Pix[3*di:3*di+3], rgb.Pix[3*si:3*si+3])
			if a != nil {
				oa.Pix[di] = a.Pix[si]
			}
		}
	}
	return out, oa
}
