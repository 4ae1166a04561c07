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
