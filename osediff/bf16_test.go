package osediff

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/nn"
)

func psnr8(a, b *imageio.RGB8) float64 {
	var se float64
	for i := range a.Pix {
		d := float64(a.Pix[i]) - float64(b.Pix[i])
		se += d * d
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(len(a.Pix))))
}

// TestBF16AgainstFP32: the bf16 path (convolutions and linear layers in
// bfloat16 with fp32 accumulation) against our fp32 output on the tiny
// ground-truth model: PSNR ≥ 40 dB on the final 8-bit images.
func TestBF16AgainstFP32(t *testing.T) {
	p := loadTiny(t)
	tags := "building, city, sky, street, tree"
	for _, c := range []struct {
		lq string
		ps int
	}{{"main", 128}, {"resize", 128}, {"tiled", 64}} {
		lq := readPNG(t, filepath.Join(tinyDir, "ref", "case_"+c.lq+"_lq.png"))
		run := func(prec nn.Precision) *imageio.RGB8 {
			old := nn.SetPrecision(prec)
			defer nn.SetPrecision(old)
			res, err := p.Upscale(context.Background(), lq, Options{ProcessSize: c.ps, Tags: &tags})
			if err != nil {
				t.Fatal(err)
			}
			return res.Image
		}
		f32, b16 := run(nn.FP32), run(nn.BF16)
		db := psnr8(f32, b16)
		t.Logf("case %s: bf16 vs fp32 PSNR %.1f dB (native bf16: %v)", c.lq, db, nn.BF16Native())
		if db < 40 {
			t.Errorf("case %s: PSNR %.1f dB < 40", c.lq, db)
		}
	}
}
