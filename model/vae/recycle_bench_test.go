package vae

import (
	"testing"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

// BenchmarkDecodeRecycle times the untiled SD 2.1 decoder (random weights,
// 64×64 latent → 512×512) three ways, interleaved: its dropped activations
// given back to the OS and new ones zeroed (as before recycling); recycled,
// new ones zeroed; recycled, new ones unzeroed (the default). The best of
// each is logged.
func BenchmarkDecodeRecycle(b *testing.B) {
	defer tensor.PoisonDirty(tensor.PoisonDirty(false))
	defer func(v bool) { recycleDropped = v }(recycleDropped)
	defer tensor.SetUnzeroed(tensor.SetUnzeroed(true))
	m := New(SD21BaseConfig())
	checkpoint.RandomInit(m, 7)
	z := tensor.New(1, 4, 64, 64)
	for i := range z.Data() {
		z.Data()[i] = float32(i%17)/17 - 0.5
	}
	for i := 0; i < b.N; i++ {
		names := []string{"discard+zeroed", "recycle+zeroed", "recycle+unzeroed"}
		best := make([]float64, len(names))
		for r := 0; r < 3; r++ {
			for v, name := range names {
				recycleDropped = v > 0
				tensor.SetUnzeroed(v == 2)
				t0 := time.Now()
				m.Decode(z, TileOptions{})
				d := time.Since(t0).Seconds()
				if best[v] == 0 || d < best[v] {
					best[v] = d
				}
				b.Logf("%-16s %.2f s", name, d)
			}
		}
		for v, name := range names {
			b.Logf("best %-16s %.2f s (%+.1f%%)", name, best[v], 100*(best[v]/best[0]-1))
		}
	}
}
