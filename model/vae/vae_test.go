package vae

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/lora"
	"github.com/osediff-go/osediff/tensor"
)

const tinyDir = "../../testdata/osediff-tiny"

// Tolerances: the max abs differences the testdata README suggests for a
// float32 port, tightened to relTol times the largest reference magnitude
// (the "~1e-5 relative" of float32 against the reference).
const (
	tolMoments = 1e-4 // encoder_out and moments
	tolDecoded = 1e-3 // decoded image
	relTol     = 1e-5
)

func loadTiny(t *testing.T, withLoRA bool) *AutoencoderKL {
	t.Helper()
	m, err := Load(filepath.Join(tinyDir, "model", "vae"))
	if err != nil {
		t.Fatal(err)
	}
	if withLoRA {
		mergeVAELoRA(t, m)
	}
	return m
}

// mergeVAELoRA merges OSEDiff's VAE LoRA (lora/state_dict_vae.safetensors,
// scale = peft's default alpha 8 / rank) into m with the lora package's
// generic merges: W += scale·B@A for every A/B pair of the state dict.
func mergeVAELoRA(t *testing.T, m *AutoencoderKL) {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(filepath.Join(tinyDir, "lora", "state_dict_vae.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	params := checkpoint.Params(m)
	const suffixA = ".lora_A.default_encoder.weight"
	merged := 0
	for _, ka := range st.Keys() {
		if !strings.HasSuffix(ka, suffixA) {
			continue
		}
		module := strings.TrimSuffix(ka, suffixA)
		a, err := checkpoint.ReadTensor(st, ka)
		if err != nil {
			t.Fatal(err)
		}
		b, err := checkpoint.ReadTensor(st, module+".lora_B.default_encoder.weight")
		if err != nil {
			t.Fatal(err)
		}
		w := params[module+".weight"]
		if w == nil {
			t.Fatalf("LoRA module %s has no base weight", module)
		}
		scale := float32(lora.DefaultAlpha) / float32(a.Dim(0))
		if w.Rank() == 4 {
			err = lora.MergeConv(w, a, b, scale)
		} else {
			err = lora.MergeLinear(w, a, b, scale)
		}
		if err != nil {
			t.Fatalf("%s: %v", module, err)
		}
		merged++
	}
	if merged != 31 {
		t.Fatalf("merged %d LoRA modules, want the README's 31", merged)
	}
}

// readImage is ToTensor(png)*2-1: [1, 3, H, W] float32.
func readImage(t *testing.T, name string) *tensor.Tensor {
	t.Helper()
	f, err := os.Open(filepath.Join(tinyDir, "ref", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	rgba, ok := img.(*image.NRGBA)
	if !ok {
		b := img.Bounds()
		rgba = image.NewNRGBA(b)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				rgba.Set(x, y, img.At(x, y))
			}
		}
	}
	b := rgba.Bounds()
	h, w := b.Dy(), b.Dx()
	x := tensor.New(1, 3, h, w)
	d := x.Data()
	for y := 0; y < h; y++ {
		for xx := 0; xx < w; xx++ {
			p := rgba.PixOffset(b.Min.X+xx, b.Min.Y+y)
			for c := 0; c < 3; c++ {
				d[(c*h+y)*w+xx] = float32(rgba.Pix[p+c])/255*2 - 1
			}
		}
	}
	return x
}

func readRef(t *testing.T, file, name string) *tensor.Tensor {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(filepath.Join(tinyDir, "ref", file))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	x, err := checkpoint.ReadTensor(st, name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// maxAbsDiff compares shapes and values; it returns the largest |got-want|,
// the largest |want| and the flat index of the worst element.
func maxAbsDiff(got, want *tensor.Tensor) (diff, scale float64, at int, err error) {
	if !tensor.SameShape(got.Shape(), want.Shape()) {
		return 0, 0, 0, fmt.Errorf("shape %v, want %v", got.Shape(), want.Shape())
	}
	g, w := got.Contiguous().Data(), want.Contiguous().Data()
	for i := range g {
		d := math.Abs(float64(g[i]) - float64(w[i]))
		if math.IsNaN(d) {
			return math.Inf(1), 0, i, nil
		}
		if d > diff {
			diff, at = d, i
		}
		scale = max(scale, math.Abs(float64(w[i])))
	}
	return diff, scale, at, nil
}

// step is one checked intermediate of a golden test.
type step struct {
	name      string
	got, want *tensor.Tensor
	tol       float64
}

// checkSteps compares intermediates in order and names the first that
// diverges.
func checkSteps(t *testing.T, steps ...step) {
	t.Helper()
	for _, s := range steps {
		d, sc, at, err := maxAbsDiff(s.got, s.want)
		if err != nil {
			t.Fatalf("first diverging intermediate: %s: %v", s.name, err)
		}
		tol := min(s.tol, relTol*sc)
		t.Logf("%-12s max|diff| %.3g (max|ref| %.3g, tolerance %.3g)", s.name, d, sc, tol)
		if !(d <= tol) {
			t.Fatalf("first diverging intermediate: %s: max|diff| %.3g at flat index %d (got %v, want %v), tolerance %.3g",
				s.name, d, at, s.got.Contiguous().Data()[at], s.want.Contiguous().Data()[at], tol)
		}
	}
}

func TestComponentMoments(t *testing.T) {
	x := readImage(t, "case_main_input_upscaled.png")
	for _, tc := range []struct {
		name string
		lora bool
		ref  string
	}{
		{"base", false, "vae_moments_base"},
		{"lora", true, "vae_moments_lora"},
		{"lora_merged", true, "vae_moments_lora_merged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := loadTiny(t, tc.lora)
			got := m.Encode(x, TileOptions{})
			checkSteps(t, step{"moments", got, readRef(t, "components.safetensors", tc.ref), tolMoments})
		})
	}
}

func TestComponentDecoder(t *testing.T) {
	m := loadTiny(t, false)
	z := readRef(t, "components.safetensors", "vae_decoder_input")
	got := m.Decode(z, TileOptions{})
	checkSteps(t, step{"decoded_raw", got, readRef(t, "case_main_pipeline.safetensors", "decoded_raw"), tolDecoded})
}

// TestPipelineCases checks the VAE stages of every pipeline file: encoder_out
// and moments (LoRA active) from the upscaled input, decoded_raw from
// decoder_input, with the tile settings of the README's 'Cases'.
func TestPipelineCases(t *testing.T) {
	m := loadTiny(t, true)
	official := TileOptions{Enabled: true, EncoderTileSize: 1024, DecoderTileSize: 224}
	small := TileOptions{Enabled: true, EncoderTileSize: 64, DecoderTileSize: 8}
	for _, tc := range []struct {
		name, image string
		tiles       TileOptions
		tiled       bool // whether the settings really tile this size
	}{
		{"main", "case_main_input_upscaled.png", official, false},
		{"resize", "case_resize_input_upscaled.png", official, false},
		{"tiled", "case_tiled_input_upscaled.png", small, true},
		{"tiled_untiled", "case_tiled_input_upscaled.png", official, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := readImage(t, tc.image)
			h, w := x.Dim(2), x.Dim(3)
			if tc.tiles.EncoderTiled(h, w) != tc.tiled || tc.tiles.DecoderTiled(h/8, w/8) != tc.tiled {
				t.Fatalf("tiling decision for %dx%d: encoder %v, decoder %v, want %v",
					h, w, tc.tiles.EncoderTiled(h, w), tc.tiles.DecoderTiled(h/8, w/8), tc.tiled)
			}
			file := "case_" + tc.name + "_pipeline.safetensors"
			enc := m.EncoderForward(x, tc.tiles)
			mom := m.Moments(enc)
			checkSteps(t,
				step{"encoder_out", enc, readRef(t, file, "encoder_out"), tolMoments},
				step{"moments", mom, readRef(t, file, "moments"), tolMoments})
			for _, f := range []string{file, "case_" + tc.name + "_mean_pipeline.safetensors"} {
				got := m.Decode(readRef(t, f, "decoder_input"), tc.tiles)
				checkSteps(t, step{"decoded_raw", got, readRef(t, f, "decoded_raw"), tolDecoded})
			}
		})
	}
}

// sameBits fails the test unless got equals the in-memory run's want bit for
// bit.
func sameBits(t *testing.T, name string, got, want *tensor.Tensor) {
	t.Helper()
	g, w := got.Data(), want.Data()
	if len(g) != len(w) {
		t.Fatalf("%s: %d values, want %d", name, len(g), len(w))
	}
	for i := range w {
		if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
			t.Fatalf("%s[%d] = %v, want %v (in memory)", name, i, g[i], w[i])
		}
	}
}

// TestSpill runs the tiled encoder and decoder with every tile set parked in
// files (Above: 1 byte), and with an unusable spill directory: the outputs
// must equal the in-memory run bit for bit, every tile must have been
// parked in the first case, and nothing may stay registered afterwards.
// tiledCase is the tiny VAE with the tiled golden case's encoder input and
// decoder input, small tiles, and its unspilled outputs.
func tiledCase(t *testing.T) (m *AutoencoderKL, x, z *tensor.Tensor, small TileOptions, wantEnc, wantDec *tensor.Tensor) {
	t.Helper()
	m = loadTiny(t, true)
	x = readImage(t, "case_tiled_input_upscaled.png")
	z = readRef(t, "case_tiled_pipeline.safetensors", "decoder_input")
	small = TileOptions{Enabled: true, EncoderTileSize: 64, DecoderTileSize: 8}
	return m, x, z, small, m.EncoderForward(x, small), m.Decode(z, small)
}

func TestSpill(t *testing.T) {
	m, x, z, small, wantEnc, wantDec := tiledCase(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		spill  Spill
		parked bool
	}{
		{"parked", Spill{Above: 1, Dir: dir}, true},
		{"unwritable dir", Spill{Above: 1, Dir: filepath.Join(dir, "missing")}, false},
		{"below threshold", Spill{Above: 1 << 40, Dir: dir}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := small
			opt.Spill = tc.spill
			before, parks, made := spilledBytes.Load(), spillParks.Load(), spillFilesMade.Load()
			enc, dec := m.EncoderForward(x, opt), m.Decode(z, opt)
			if parked := spilledBytes.Load() > before; parked != tc.parked {
				t.Errorf("tiles parked: %v, want %v", parked, tc.parked)
			}
			if p, f := spillParks.Load()-parks, spillFilesMade.Load()-made; tc.parked && f*4 > p {
				t.Errorf("%d files made for %d parks: the files are not reused", f, p)
			}
			sameBits(t, "encoder_out", enc, wantEnc)
			sameBits(t, "decoded_raw", dec, wantDec)
			registry.Range(func(k, _ any) bool {
				t.Errorf("tensor %v still registered after the call", k.(*tensor.Tensor).Shape())
				return true
			})
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("spill directory holds %d entries after the call", len(ents))
			}
		})
	}
}

// TestSpillHold runs the spilled encode and decode twice under one Hold:
// the second pair makes no new spill file (it overwrites the first pair's),
// the results are unchanged, and releasing the hold closes the kept files.
func TestSpillHold(t *testing.T) {
	m, x, z, opt, wantEnc, wantDec := tiledCase(t)
	opt.Spill = Spill{Above: 1, Dir: t.TempDir()}
	release := Hold()
	for i := range 2 {
		made := spillFilesMade.Load()
		sameBits(t, fmt.Sprintf("encoder_out %d", i), m.EncoderForward(x, opt), wantEnc)
		sameBits(t, fmt.Sprintf("decoded_raw %d", i), m.Decode(z, opt), wantDec)
		if f := spillFilesMade.Load() - made; (f > 0) != (i == 0) {
			t.Errorf("pass %d made %d spill files", i, f)
		}
	}
	filePool.Lock()
	kept := len(filePool.free[opt.Spill.Dir])
	filePool.Unlock()
	if kept == 0 {
		t.Error("no spill file kept under the hold")
	}
	release()
	release() // a second call does nothing
	filePool.Lock()
	defer filePool.Unlock()
	if filePool.holds != 0 || len(filePool.free) != 0 {
		t.Errorf("after release: %d holds, files kept in %d directories", filePool.holds, len(filePool.free))
	}
}

// TestSpillLarge is TestSpill at tile sizes whose buffers are large enough
// for their pages to be handed back to the OS when parked or consumed
// (tensor.Discard) or, without a budget, to be reused by the next output
// (tensor.Recycle): were a live buffer discarded or reused, the outputs
// would differ from a run where every output is a fresh buffer of NaNs.
func TestSpillLarge(t *testing.T) {
	defer tensor.PoisonDirty(tensor.PoisonDirty(false))
	m := loadTiny(t, false)
	rnd := func(shape ...int) *tensor.Tensor {
		x := tensor.New(shape...)
		s := uint32(12345)
		for i := range x.Data() {
			s = s*1664525 + 1013904223
			x.Data()[i] = float32(s>>8)/float32(1<<24)*2 - 1
		}
		return x
	}
	x, z := rnd(1, 3, 512, 512), rnd(1, 4, 64, 64)
	opt := TileOptions{Enabled: true, EncoderTileSize: 256, DecoderTileSize: 32}
	limit := tensor.SetPlanLimit(0) // recycling alone first
	tensor.PoisonDirty(true)
	wantEnc, wantDec := m.EncoderForward(x, opt), m.Decode(z, opt)
	tensor.PoisonDirty(false)
	hits := tensor.RecycleHits()
	sameBits(t, "encoder_out recycled", m.EncoderForward(x, opt), wantEnc)
	sameBits(t, "decoded_raw recycled", m.Decode(z, opt), wantDec)
	if tensor.RecycleHits() == hits {
		t.Error("no buffer was recycled")
	}
	if b := tensor.RecycledBytes(); b != 0 {
		t.Errorf("%d recycled bytes still wait after the calls", b)
	}
	// Memory plans: the first calls record (on Linux served best fit from
	// the reserved slab), the next ones place their buffers in the kept
	// slab, which holds the previous calls' values.
	tensor.SetPlanLimit(limit)
	tensor.ReleasePlans()
	defer tensor.ReleasePlans()
	for i := range 3 {
		hits := tensor.PlanHits()
		sameBits(t, fmt.Sprintf("encoder_out planned %d", i), m.EncoderForward(x, opt), wantEnc)
		sameBits(t, fmt.Sprintf("decoded_raw planned %d", i), m.Decode(z, opt), wantDec)
		if got := tensor.PlanHits() - hits; (got > 0) != (i > 0 || runtime.GOOS == "linux") {
			t.Errorf("call %d: %d buffers from the plan's slab", i, got)
		}
		if b := tensor.PlanBytesOut(); b != 0 {
			t.Errorf("call %d: %d bytes of the slab still out after the calls", i, b)
		}
	}
	if tensor.PlanSlabBytes() == 0 {
		t.Error("no slab was made")
	}
	opt.Spill = Spill{Above: 1, Dir: t.TempDir()}
	before := spilledBytes.Load()
	enc, dec := m.EncoderForward(x, opt), m.Decode(z, opt)
	if spilledBytes.Load()-before < 64<<20 {
		t.Fatalf("only %d bytes parked", spilledBytes.Load()-before)
	}
	sameBits(t, "encoder_out", enc, wantEnc)
	sameBits(t, "decoded_raw", dec, wantDec)
	if b := tensor.PlanBytesOut(); b != 0 {
		t.Errorf("%d bytes of the slab still out after the spilled calls", b)
	}
}

// TestSpillFiles checks the spill files' copy at sizes around its split
// into parts (0, one byte, odd sizes, one part and a byte, several parts),
// a short read, and the choice of a free file: the smallest that holds the
// request, else the largest (it grows).
func TestSpillFiles(t *testing.T) {
	dir := t.TempDir()
	sp := newSpiller(Spill{Above: 1, Dir: dir})
	sp.live = map[*tensor.Tensor]bool{}
	for _, n := range []int{0, 1, 17, 4093, 16<<20 - 1, 16 << 20, 16<<20 + 3, 33<<20 + 5} {
		f, err := sp.file(int64(n))
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		if err := copyFile(b, f, true); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
		got := make([]byte, n)
		if err := copyFile(got, f, false); err != nil {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("%d bytes: read back differs", n)
		}
		if err := copyFile(make([]byte, n+1), f, false); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading %d bytes from %d: %v, want unexpected EOF", n+1, n, err)
		}
		f.Close()
	}
	var free []*os.File
	for _, n := range []int64{100, 300, 200} {
		f, err := sp.file(n) // a new file: none is free
		if err != nil {
			t.Fatal(err)
		}
		if err := copyFile(make([]byte, n), f, true); err != nil {
			t.Fatal(err)
		}
		free = append(free, f)
	}
	sp.free = free
	for _, tc := range []struct{ need, want int64 }{
		{150, 200}, // smallest that holds it
		{400, 300}, // none holds it: the largest
		{1, 100},
	} {
		f, err := sp.file(tc.need)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if st.Size() != tc.want {
			t.Errorf("file for %d bytes has %d, want the free one of %d", tc.need, st.Size(), tc.want)
		}
		f.Close()
	}
	if len(sp.free) != 0 {
		t.Errorf("%d free files left", len(sp.free))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spill directory holds %d entries", len(ents))
	}
}
