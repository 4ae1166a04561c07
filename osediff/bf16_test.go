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

// TestWeightStorage: fp16 weights (computed in fp32) and the bf16-only
// packed weights (StoreBF16, in bf16 precision) against the fp32 output on
// the tiny ground-truth model. fp16 rounds only the weights (2⁻¹¹): PSNR ≥ 50
// dB; StoreBF16 with bf16 precision must keep the bf16 path's ≥ 40 dB. A
// StoreBF16 pipeline then refuses to go back to fp32 storage. (Each loads
// its own pipeline with LoadOptions.Weights.)
func TestWeightStorage(t *testing.T) {
	tags := "building, city, sky, street, tree"
	lq := readPNG(t, filepath.Join(tinyDir, "ref", "case_main_lq.png"))
	run := func(p *Pipeline, prec nn.Precision) *imageio.RGB8 {
		old := nn.SetPrecision(prec)
		defer nn.SetPrecision(old)
		res, err := p.Upscale(context.Background(), lq, Options{ProcessSize: 128, Tags: &tags})
		if err != nil {
			t.Fatal(err)
		}
		return res.Image
	}
	ref := run(loadTiny(t), nn.FP32)
	for _, c := range []struct {
		st   nn.Storage
		prec nn.Precision
		min  float64
	}{{nn.StoreF16, nn.FP32, 50}, {nn.StoreF16, nn.BF16, 40}, {nn.StoreBF16, nn.BF16, 40}} {
		// A fresh pipeline (loadTiny's is shared), converted by Load.
		p, err := Load(LoadOptions{Model: filepath.Join(tinyDir, "model"), LoRA: filepath.Join(tinyDir, "osediff_tiny.pkl"), Weights: c.st})
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := p.SetWeightStorage(c.st); err != nil || rep.BytesBefore != rep.BytesAfter || rep.Layers == 0 {
			t.Errorf("%v: converting again: %+v, %v", c.st, rep, err)
		}
		db := psnr8(ref, run(p, c.prec))
		t.Logf("weights %v, precision %v: PSNR %.1f dB against fp32", c.st, c.prec, db)
		if db < c.min {
			t.Errorf("weights %v, precision %v: PSNR %.1f dB < %g", c.st, c.prec, db, c.min)
		}
		if c.st == nn.StoreBF16 && nn.BF16Native() {
			if _, err := p.SetWeightStorage(nn.StoreF32); err == nil {
				t.Error("a StoreBF16 pipeline that ran in bf16 went back to fp32 storage")
			}
		}
	}
}
