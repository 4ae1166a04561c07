package unet

import (
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
)

// TestGoldenPipelineModelPred checks model_pred = UNet(lq_latent, 999,
// prompt_embeds) with the LoRA (merged here; unmerged in the reference) for
// every untiled pipeline case: 16×20 latents (not a multiple of 8: the
// upsamplers resize to the skip sizes) and an 8×32 latent.
func TestGoldenPipelineModelPred(t *testing.T) {
	m := loadTiny(t)
	mergeLoRA(t, m)
	for _, name := range []string{"main", "main_mean", "resize", "resize_mean", "tiled_untiled", "tiled_untiled_mean"} {
		t.Run(name, func(t *testing.T) {
			st, err := checkpoint.OpenSafetensors(tinyDir + "ref/case_" + name + "_pipeline.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			x, ctx, want := mustRead(t, st, "lq_latent"), mustRead(t, st, "prompt_embeds"), mustRead(t, st, "model_pred")
			got := m.Forward(x, 999, ctx)
			d, at, scale := diff(got, want)
			t.Logf("model_pred %v: max|diff| %.3g (at %d), max|ref| %.3g", want.Shape(), d, at, scale)
			if !(d <= tol) {
				t.Fatalf("model_pred: max|diff| %.3g at flat index %d (got %g, want %g), tolerance %g", d, at, got.Data()[at], want.Data()[at], tol)
			}
		})
	}
}
