package vae

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/nn"
	"github.com/osediff-go/osediff/tensor"
)

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig(filepath.Join(tinyDir, "model", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.BlockOutChannels, []int{32, 32, 32, 64}) || c.LayersPerBlock != 2 ||
		c.LatentChannels != 4 || c.NormNumGroups != 32 || c.ScalingFactor != 0.18215 || c.DownFactor() != 8 {
		t.Fatalf("tiny config %+v", c)
	}
	if err := SD21BaseConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct{ name, json, wantErr string }{
		{"defaults", `{}`, ""},
		{"no scaling_factor keeps default", `{"block_out_channels":[64,64],"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D"],"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D"]}`, ""},
		{"bad json", `{"block_out_channels":`, "unexpected end"},
		{"gelu", `{"act_fn":"gelu"}`, "act_fn"},
		{"length mismatch", `{"block_out_channels":[64,64]}`, "down_block_types"},
		{"groups", `{"block_out_channels":[48]}`, "norm_num_groups"},
		{"block type", `{"down_block_types":["AttnDownEncoderBlock2D"]}`, "not supported"},
		{"zero latent", `{"latent_channels":0}`, "latent_channels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			if err := os.WriteFile(p, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			case tc.wantErr == "" && c.ScalingFactor != 0.18215:
				t.Fatalf("scaling_factor %v", c.ScalingFactor)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(dir, "absent.json")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestBestTileSize(t *testing.T) {
	for _, tc := range []struct{ lower, upper, want int }{
		{5, 8, 8},
		{0, 64, 0},
		{-14, 8, 0}, // Python's modulo: thin images give 0
		{117, 224, 128},
		{992, 1024, 992},
		{1000, 1010, 1008},
		{33, 34, 34},
		{33, 33, 33},
		{64, 64, 64},
	} {
		if got := bestTileSize(tc.lower, tc.upper); got != tc.want {
			t.Errorf("bestTileSize(%d, %d) = %d, want %d", tc.lower, tc.upper, got, tc.want)
		}
	}
}

func TestSplitTiles(t *testing.T) {
	for _, tc := range []struct {
		name            string
		h, w, tile, pad int
		decoder         bool
		wantIn, wantOut []box
	}{
		{ // the README's 'tiled' case, encoder: 64x256 image, tile 64
			"encoder 64x256", 64, 256, 64, 32, false,
			[]box{{0, 128, 0, 64}, {64, 192, 0, 64}, {128, 256, 0, 64}},
			[]box{{0, 12, 0, 8}, {12, 20, 0, 8}, {20, 32, 0, 8}},
		},
		{ // the same case, decoder: 8x32 latent, tile 8 (tile height 0)
			"decoder 8x32", 8, 32, 8, 11, true,
			[]box{{0, 30, 0, 8}, {8, 32, 0, 8}},
			[]box{{0, 152, 0, 64}, {152, 256, 0, 64}},
		},
		{
			"encoder 2048x2048", 2048, 2048, 1024, 32, false,
			[]box{{0, 1056, 0, 1056}, {992, 2048, 0, 1056}, {0, 1056, 992, 2048}, {992, 2048, 992, 2048}},
			[]box{{0, 128, 0, 128}, {128, 256, 0, 128}, {0, 128, 128, 256}, {128, 256, 128, 256}},
		},
		{
			"decoder 256x256", 256, 256, 224, 11, true,
			[]box{{0, 150, 0, 150}, {128, 256, 0, 150}, {0, 150, 128, 256}, {128, 256, 128, 256}},
			[]box{{0, 1112, 0, 1112}, {1112, 2048, 0, 1112}, {0, 1112, 1112, 2048}, {1112, 2048, 1112, 2048}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, out := splitTiles(tc.h, tc.w, tc.tile, tc.pad, 8, tc.decoder)
			if !reflect.DeepEqual(in, tc.wantIn) || !reflect.DeepEqual(out, tc.wantOut) {
				t.Fatalf("in %v out %v, want in %v out %v", in, out, tc.wantIn, tc.wantOut)
			}
		})
	}
}

func TestTileDecision(t *testing.T) {
	def := TileOptions{Enabled: true}
	for _, tc := range []struct {
		name     string
		opt      TileOptions
		h, w     int
		enc, dec bool
	}{
		{"disabled", TileOptions{}, 4096, 4096, false, false},
		{"encoder limit", def, 1088, 1088, false, true},
		{"encoder above", def, 1089, 8, true, true},
		{"decoder at limit", def, 246, 8, false, false},
		{"decoder limit", def, 246, 246, false, false},
		{"decoder above", def, 10, 247, false, true},
		{"small tiles", TileOptions{Enabled: true, EncoderTileSize: 64, DecoderTileSize: 8}, 64, 256, true, true},
	} {
		if got := tc.opt.EncoderTiled(tc.h, tc.w); got != tc.enc {
			t.Errorf("%s: EncoderTiled(%d, %d) = %v", tc.name, tc.h, tc.w, got)
		}
		if got := tc.opt.DecoderTiled(tc.h, tc.w); got != tc.dec {
			t.Errorf("%s: DecoderTiled(%d, %d) = %v", tc.name, tc.h, tc.w, got)
		}
	}
}

func randTensor(r *rand.Rand, shape ...int) *tensor.Tensor {
	x := tensor.New(shape...)
	for i := range x.Data() {
		x.Data()[i] = float32(r.NormFloat64())
	}
	return x
}

func testNorm(r *rand.Rand, c int) *nn.GroupNorm {
	g := nn.NewGroupNorm(32, c, normEps)
	g.Weight.SetData(randTensor(r, c).Data())
	g.Bias.SetData(randTensor(r, c).Data())
	return g
}

// TestSharedGroupNorm checks vaehook's statistics: one tile is exactly
// nn.GroupNorm; identical tiles reproduce it; constant tiles of different
// sizes are centred on the pixel-weighted mean of their means with zero
// variance (the spread between tiles is ignored).
func TestSharedGroupNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gn := testNorm(r, 64)
	x := randTensor(r, 2, 64, 5, 7)

	want := gn.Forward(x, true)
	got := normTiles(gn, Tiles{x.Clone()}, true, true)[0]
	if d, _, _, _ := maxAbsDiff(got, want); d != 0 {
		t.Fatalf("one tile differs from nn.GroupNorm by %g", d)
	}
	two := normTiles(gn, Tiles{x, x.Clone()}, true, false)
	for i, y := range two {
		if d, _, _, _ := maxAbsDiff(y, want); d > 1e-5 {
			t.Fatalf("identical tile %d differs from nn.GroupNorm by %g", i, d)
		}
	}

	a, b := tensor.New(1, 32, 4, 4), tensor.New(1, 32, 2, 4)
	for i := range a.Data() {
		a.Data()[i] = 1
	}
	for i := range b.Data() {
		b.Data()[i] = 3
	}
	id := nn.NewGroupNorm(32, 32, normEps)
	id.Weight.SetData(make([]float32, 32))
	id.Bias.SetData(make([]float32, 32))
	for i := range id.Weight.Data() {
		id.Weight.Data()[i] = 1
	}
	out := normTiles(id, Tiles{a, b}, false, false)
	mean := 2.0/3*1 + 1.0/3*3 // weights 16/16 and 8/16, normalised to sum 1
	inv := 1 / math.Sqrt(normEps)
	for i, tc := range []struct {
		y   *tensor.Tensor
		val float64
	}{{out[0], 1}, {out[1], 3}} {
		want := float32((tc.val - mean) * inv)
		for _, v := range tc.y.Data() {
			if math.Abs(float64(v-want)) > 1e-6*math.Abs(float64(want)) {
				t.Fatalf("constant tile %d: %v, want %v", i, v, want)
			}
		}
	}
}

func TestLegacyRename(t *testing.T) {
	for in, want := range map[string]string{
		"encoder.mid_block.attentions.0.query.weight":      "encoder.mid_block.attentions.0.to_q.weight",
		"decoder.mid_block.attentions.0.key.bias":          "decoder.mid_block.attentions.0.to_k.bias",
		"decoder.mid_block.attentions.0.value.weight":      "decoder.mid_block.attentions.0.to_v.weight",
		"encoder.mid_block.attentions.0.proj_attn.bias":    "encoder.mid_block.attentions.0.to_out.0.bias",
		"encoder.mid_block.attentions.0.to_q.weight":       "encoder.mid_block.attentions.0.to_q.weight",
		"encoder.mid_block.attentions.0.group_norm.weight": "encoder.mid_block.attentions.0.group_norm.weight",
		"encoder.down_blocks.0.resnets.0.conv1.weight":     "encoder.down_blocks.0.resnets.0.conv1.weight",
	} {
		if got := LegacyRename(in); got != want {
			t.Errorf("LegacyRename(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFLOPs checks the counts against the PyTorch forward-hook counts of
// shared/design/peer-bench.md (SD 2.1-base, 512×512: 1116.7 and 2514.5 GFLOP).
func TestFLOPs(t *testing.T) {
	c := SD21BaseConfig()
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"encoder 512", EncoderFLOPs(c, 512, 512) / 1e9, 1116.7},
		{"decoder 64", DecoderFLOPs(c, 64, 64) / 1e9, 2514.5},
		// Its upsamplers: 512 channels to 128² and 256², 256 to 512².
		{"upsamplers 64", UpsamplerFLOPs(c, 64, 64) / 1e9, 2 * 9 * (512*512*(128*128+256*256) + 256*256*512*512) / 1e9},
	} {
		if math.Abs(tc.got-tc.want) > 0.05 {
			t.Errorf("%s: %.2f GFLOP, want %.1f", tc.name, tc.got, tc.want)
		}
	}
}

// TestUpsampleBands checks the banded Upsample2D against upsampling the whole
// tile and convolving it.
func TestUpsampleBands(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	u := NewUpsample2D(8)
	u.Conv.Weight.SetData(randTensor(r, u.Conv.Weight.Shape()...).Data())
	u.Conv.Bias.SetData(randTensor(r, 8).Data())
	x := randTensor(r, 2, 8, 7, 5)
	want := u.Conv.Forward(nn.Upsample2x(x))
	defer func(v bool) { upsampleViaImage = v }(upsampleViaImage)
	for _, viaImage := range []bool{true, false} {
		upsampleViaImage = viaImage // false: the phase convolutions (bands of their own)
		for _, rows := range []int{1, 2, 3, 5, 13, 14, 100} {
			got := u.forward(x, rows)
			if d, _, _, err := maxAbsDiff(got, want); err != nil || d > 1e-5 {
				t.Fatalf("via image %v, %d-row bands: max|diff| %g, %v", viaImage, rows, d, err)
			}
		}
	}
}

// normTiles (test helper) applies gn (+SiLU) to every tile with shared statistics. In place
// overwrites the tiles (their old values must be dead); otherwise each tile
// gets a new tensor.
func normTiles(gn *nn.GroupNorm, xs Tiles, silu, inPlace bool) Tiles {
	st := sharedStats(xs, gn.Eps)
	out := make(Tiles, len(xs))
	for i, x := range xs {
		y := x
		if !inPlace {
			y = tensor.New(x.Shape()...)
		}
		applyNorm(gn, st, x, y, silu)
		out[i] = y
	}
	return out
}

// normAffine (the norm fused into the next convolution) applies what
// applyNorm writes, for one tile (nn.GroupNorm exactly) and for shared
// statistics (there applyNorm rounds x·scale before adding the shift, the
// fused transform rounds once: within 1e-6 of the largest value).
func TestNormAffine(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	gn := testNorm(r, 64)
	x, x2 := randTensor(r, 2, 64, 5, 7), randTensor(r, 2, 64, 3, 7)
	for _, tiles := range []Tiles{{x}, {x, x2}} {
		st := sharedStats(tiles, gn.Eps)
		for _, silu := range []bool{false, true} {
			for i, tile := range tiles {
				want := tensor.New(tile.Shape()...)
				applyNorm(gn, st, tile, want, silu)
				got := tensor.New(tile.Shape()...)
				n, c := tile.Dim(0), tile.Dim(1)
				normAffine(gn, st, tile, silu).Apply(tile.Data(), got.Data(), n*c, tile.Numel()/(n*c))
				if d, scale, _, _ := maxAbsDiff(got, want); d > 1e-6*scale || (len(tiles) == 1 && d != 0) {
					t.Fatalf("%d tiles, silu %v, tile %d: fused transform differs by %g", len(tiles), silu, i, d)
				}
			}
		}
	}
}

// TestTiledFLOPs: untiled, Encode/DecodeFLOPs are the untiled counts; tiled
// (2048×2048, the OSEDiff tiles), they are the sums over the tiles' padded
// boxes, computed here from the boxes vaehook makes: the encoder's four
// 1056×1056 tiles, the decoder's 150- and 128-latent tiles.
func TestTiledFLOPs(t *testing.T) {
	c := SD21BaseConfig()
	on := TileOptions{Enabled: true}
	if got, want := EncodeFLOPs(c, on, 512, 512), EncoderFLOPs(c, 512, 512); got != want {
		t.Errorf("EncodeFLOPs 512 = %g, want the untiled %g", got, want)
	}
	if got, want := DecodeFLOPs(c, on, 64, 64), DecoderFLOPs(c, 64, 64); got != want {
		t.Errorf("DecodeFLOPs 64 = %g, want the untiled %g", got, want)
	}
	quant := convFLOPs(8, 8, 1, 256, 256)
	encTile, _, _ := encoderBodyFLOPs(c, 1056, 1056)
	if got, want := EncodeFLOPs(c, on, 2048, 2048), 4*encTile+quant; math.Abs(got-want) > 1e-6*want {
		t.Errorf("EncodeFLOPs 2048 = %g, want %g", got, want)
	}
	post := convFLOPs(4, 4, 1, 256, 256)
	dec := decoderBodyFLOPs(c, 150, 150) + 2*decoderBodyFLOPs(c, 150, 128) + decoderBodyFLOPs(c, 128, 128)
	if got, want := DecodeFLOPs(c, on, 256, 256), post+dec; math.Abs(got-want) > 1e-6*want {
		t.Errorf("DecodeFLOPs 256 = %g, want %g", got, want)
	}
	ups := UpsamplerFLOPs(c, 150, 150) + 2*UpsamplerFLOPs(c, 150, 128) + UpsamplerFLOPs(c, 128, 128)
	if got := DecodeUpsamplerFLOPs(c, on, 256, 256); math.Abs(got-ups) > 1e-6*ups {
		t.Errorf("DecodeUpsamplerFLOPs 256 = %g, want %g", got, ups)
	}
	// The tiles' attention is local: less than one attention over the whole latent.
	if e, u := EncodeFLOPs(c, on, 2048, 2048), EncoderFLOPs(c, 2048, 2048); !(e < u) {
		t.Errorf("tiled encoder %g FLOPs, untiled %g: want fewer", e, u)
	}
	t.Logf("2048×2048: encode %.1f TFLOP tiled (untiled %.1f), decode %.1f (untiled %.1f)",
		EncodeFLOPs(c, on, 2048, 2048)/1e12, EncoderFLOPs(c, 2048, 2048)/1e12, DecodeFLOPs(c, on, 256, 256)/1e12, DecoderFLOPs(c, 256, 256)/1e12)
}

// TestShortcutInPlace checks shortcut on a narrowing 1×1 convolution: for a
// tile the run owns, in place, it writes over the tile's buffer, the result
// matches the convolution, and the spiller counts the whole buffer the
// result holds (then nothing once it is consumed); not in place the result
// has a buffer of its own; for a tensor the run does not own it leaves the
// input alone.
func TestShortcutInPlace(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c := nn.NewConv2d(8, 4, 1, 1, 0, true)
	c.Weight = tensor.New(4, 8, 1, 1)
	c.Bias = tensor.New(4)
	x := tensor.New(1, 8, 5, 7)
	for _, d := range [][]float32{c.Weight.Data(), c.Bias.Data(), x.Data()} {
		for i := range d {
			d[i] = float32(r.NormFloat64())
		}
	}
	want := c.Forward(x.Clone())
	near := func(what string, got *tensor.Tensor) {
		t.Helper()
		if !reflect.DeepEqual(got.Shape(), want.Shape()) {
			t.Fatalf("%s: shape %v, want %v", what, got.Shape(), want.Shape())
		}
		for i, v := range got.Data() {
			if w := want.Data()[i]; math.Abs(float64(v-w)) > 1e-5*math.Max(1, math.Abs(float64(w))) {
				t.Fatalf("%s: value %d = %v, want %v", what, i, v, w)
			}
		}
	}

	// Not the run's own tensor: a new result, x untouched.
	x0 := x.Clone()
	y := shortcut(c, x, true)
	near("unregistered", y)
	if &y.Storage()[0] == &x.Storage()[0] || !reflect.DeepEqual(x.Data(), x0.Data()) {
		t.Fatal("an unregistered input was written over")
	}

	// Not in place (tiled, or h parked): a buffer of its own.
	bsp := newSpiller(Spill{Above: 1 << 40})
	defer bsp.close()
	xb := x.Clone()
	bsp.adopt(xb)
	y = shortcut(c, xb, false)
	near("not in place", y)
	if bsp.resident != int64(y.Numel())*4 || xb.HasData() {
		t.Errorf("not in place: %d bytes counted, input kept %v", bsp.resident, xb.HasData())
	}

	sp := newSpiller(Spill{})
	defer sp.close()
	buf := &x.Storage()[0]
	sp.adopt(x)
	y = shortcut(c, x, true)
	near("in place", y)
	if &y.Storage()[0] != buf || x.HasData() {
		t.Fatal("the shortcut was not written over the tile's buffer")
	}
	if got, want := sp.resident, int64(8*5*7*4); got != want {
		t.Errorf("budget counts %d bytes, want the whole buffer's %d", got, want)
	}
	consume(y)
	if sp.resident != 0 {
		t.Errorf("budget counts %d bytes after the last use", sp.resident)
	}
}
