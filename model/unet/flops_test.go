package unet

import (
	"math"
	"testing"
)

// TestFLOPsSD21 checks the count against the PyTorch hook count of
// ../shared/design/peer-bench.md (UNet at a 64×64 latent: 804.3 GFLOP).
func TestFLOPsSD21(t *testing.T) {
	got := FLOPs(SD21BaseConfig(), 64, 64, 77) / 1e9
	if math.Abs(got-804.3) > 0.1 {
		t.Fatalf("FLOPs(SD 2.1-base, 64×64, 77) = %.2f GFLOP, want 804.3", got)
	}
}

// TestExecutedFLOPs: at a 64×64 latent the three upsamplers (1280 channels
// to 16² and 32², 640 to 64²) are exact ×2 and execute 4/9 of their
// 2·C²·9·H·W; at 63×63 the last one resizes to the skip size (63 is not
// 2·32), which runs the ordinary convolution.
func TestExecutedFLOPs(t *testing.T) {
	cfg := SD21BaseConfig()
	up := func(c, hw int) float64 { return 2 * float64(c*c*9) * float64(hw*hw) }
	full := FLOPs(cfg, 64, 64, 77)
	want := full - 5.0/9*(up(1280, 16)+up(1280, 32)+up(640, 64))
	if got := ExecutedFLOPs(cfg, 64, 64, 77); math.Abs(got-want) > 1e-6*want {
		t.Fatalf("ExecutedFLOPs(64×64) = %.4g, want %.4g", got, want)
	}
	full = FLOPs(cfg, 63, 63, 77)
	want = full - 5.0/9*(up(1280, 16)+up(1280, 32))
	if got := ExecutedFLOPs(cfg, 63, 63, 77); math.Abs(got-want) > 1e-6*want {
		t.Fatalf("ExecutedFLOPs(63×63) = %.4g, want %.4g", got, want)
	}
}
