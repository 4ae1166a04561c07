package osediff

import (
	"context"
	"errors"

	"github.com/osediff-go/osediff/imageio"
)

// UpscaleImage runs Upscale on a decoded image and carries what the model does
// not see: the alpha channel is upscaled separately (Pillow bicubic, straight
// to the output size) and the EXIF and ICC metadata are kept for the output.
func UpscaleImage(ctx context.Context, p *Pipeline, img *imageio.Image, o Options) (*imageio.Image, *Result, error) {
	if img == nil || img.RGB == nil {
		return nil, nil, errors.New("no image")
	}
	res, err := p.Upscale(ctx, img.RGB, o)
	if err != nil {
		return nil, nil, err
	}
	out := &imageio.Image{RGB: res.Image, Format: img.Format, BitDepth: 8, EXIF: img.EXIF, ICC: img.ICC}
	if img.Alpha != nil {
		plan := res.Plan
		if o.KeepProcessedSize {
			plan.OutW, plan.OutH = res.Image.W, res.Image.H
		}
		if out.Alpha, err = ResizeAlpha(img.Alpha, plan); err != nil {
			return nil, nil, err
		}
	}
	return out, res, nil
}
