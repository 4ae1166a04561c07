package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/osediff"
)

const tiny = "../../testdata/osediff-tiny"

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "osediff-cli")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "osediff")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the CLI: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "OSEDIFF_HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func tinyArgs(extra ...string) []string {
	return append([]string{"upscale", "--model", filepath.Join(tiny, "model"), "--lora", filepath.Join(tiny, "osediff_tiny.pkl"),
		"--tags", "building, city, sky, street, tree", "--offline"}, extra...)
}

func readRGB(t *testing.T, path string) *imageio.RGB8 {
	t.Helper()
	img, err := imageio.ReadFile(path, imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img.RGB
}

// compare returns the largest byte difference over bytes where mask is set
// (all when nil) and over all bytes.
func compare(t *testing.T, got, want *imageio.RGB8, mask []bool) (masked, all int) {
	t.Helper()
	if got.W != want.W || got.H != want.H {
		t.Fatalf("size %dx%d, want %dx%d", got.W, got.H, want.W, want.H)
	}
	for i := range got.Pix {
		d := int(got.Pix[i]) - int(want.Pix[i])
		if d < 0 {
			d = -d
		}
		all = max(all, d)
		if mask == nil || mask[i] {
			masked = max(masked, d)
		}
	}
	return masked, all
}

// TestUpscaleGolden runs the command as a user would and compares its PNGs
// with the reference's posterior-mean outputs. The colour fix reads the
// 8-bit output, so where a float32 rounding difference flips an input byte
// at a truncation boundary (checked: at most 1 level, on < 0.1% of bytes)
// the fix amplifies it; those bytes are reported, the rest must be within 2.
func TestUpscaleGolden(t *testing.T) {
	cases := []struct {
		name  string
		lq    string
		stem  string
		flags []string
		fixes []string
	}{
		{"main", "case_main_lq.png", "case_main_mean", []string{"--process-size", "128"}, []string{"adain", "wavelet"}},
		{"tiled", "case_tiled_lq.png", "case_tiled_mean", []string{"--process-size", "64", "--vae-encoder-tile", "64",
			"--vae-decoder-tile", "8", "--latent-tile", "8", "--latent-overlap", "4"}, []string{"adain"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(tiny, "ref", c.lq)
			out := filepath.Join(dir, "none.png")
			if msg, err := cli(t, tinyArgs(append(c.flags, "--color-fix", "none", "-i", in, "-o", out)...)...); err != nil {
				t.Fatalf("%v\n%s", err, msg)
			}
			pre := readRGB(t, out)
			refPre := readRGB(t, filepath.Join(tiny, "ref", c.stem+"_output_before_colorfix.png"))
			if m, _ := compare(t, pre, refPre, nil); m > 1 {
				t.Fatalf("before the colour fix: max diff %d", m)
			}
			mask := make([]bool, len(pre.Pix))
			flipped := 0
			for i := range mask {
				mask[i] = pre.Pix[i] == refPre.Pix[i]
				if !mask[i] {
					flipped++
				}
			}
			if float64(flipped) > 1e-3*float64(len(mask)) {
				t.Fatalf("%d bytes differ before the colour fix", flipped)
			}
			for _, fix := range c.fixes {
				out := filepath.Join(dir, fix+".png")
				if msg, err := cli(t, tinyArgs(append(c.flags, "--color-fix", fix, "-i", in, "-o", out)...)...); err != nil {
					t.Fatalf("%v\n%s", err, msg)
				}
				got := readRGB(t, out)
				want := readRGB(t, filepath.Join(tiny, "ref", c.stem+"_sr_"+fix+".png"))
				m, all := compare(t, got, want, mask)
				t.Logf("%s %s: max diff %d (%d incl. the %d bytes flipped before the fix)", c.name, fix, m, all, flipped)
				if m > 2 {
					t.Errorf("%s %s: max diff %d > 2", c.name, fix, m)
				}
			}
		})
	}
}

// TestUpscaleExactScale checks that the output is exactly scale × the input,
// for integer and non-integer scales and for inputs the reference enlarges.
func TestUpscaleExactScale(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(tiny, "ref", "case_resize_lq.png") // 30x23
	for _, c := range []struct {
		scale string
		w, h  int
	}{{"4", 120, 92}, {"2", 60, 46}, {"1", 30, 23}, {"2.5", 75, 57}} {
		out := filepath.Join(dir, "x"+c.scale+".png")
		if msg, err := cli(t, tinyArgs("--process-size", "128", "--scale", c.scale, "-i", in, "-o", out)...); err != nil {
			t.Fatalf("scale %s: %v\n%s", c.scale, err, msg)
		}
		img := readRGB(t, out)
		if img.W != c.w || img.H != c.h {
			t.Errorf("scale %s: %dx%d, want %dx%d", c.scale, img.W, img.H, c.w, c.h)
		}
	}
}

// TestBatchKillAndResume kills a folder run midway and reruns it: every
// output is complete and none is redone.
func TestBatchKillAndResume(t *testing.T) {
	dir := t.TempDir()
	inDir, outDir := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	os.MkdirAll(inDir, 0o755)
	src, _ := os.ReadFile(filepath.Join(tiny, "ref", "case_main_lq.png"))
	const n = 12
	for i := 0; i < n; i++ {
		os.WriteFile(filepath.Join(inDir, fmt.Sprintf("img%02d.png", i)), src, 0o644)
	}
	args := tinyArgs("--process-size", "128", "-i", inDir, "-o", outDir)
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "OSEDIFF_HOME="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for a few outputs, then kill without warning.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ents, _ := filepath.Glob(filepath.Join(outDir, "*.png"))
		if len(ents) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	first, _ := filepath.Glob(filepath.Join(outDir, "*.png"))
	if len(first) == 0 || len(first) == n {
		t.Fatalf("killed run left %d outputs; want a partial run", len(first))
	}
	mtimes := map[string]time.Time{}
	for _, f := range first {
		st, _ := os.Stat(f)
		mtimes[f] = st.ModTime()
		readRGB(t, f) // every output present is complete
	}
	out, err := cli(t, args...)
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("%d done, %d skipped, 0 failed", n-len(first), len(first))) {
		t.Fatalf("rerun summary wrong:\n%s", out)
	}
	all, _ := filepath.Glob(filepath.Join(outDir, "*"))
	if len(all) != n {
		t.Fatalf("%d files in the output folder, want %d: %v", len(all), n, all)
	}
	for _, f := range all {
		img := readRGB(t, f)
		if img.W != 160 || img.H != 128 {
			t.Fatalf("%s: %dx%d", f, img.W, img.H)
		}
		if old, ok := mtimes[f]; ok {
			st, _ := os.Stat(f)
			if !st.ModTime().Equal(old) {
				t.Fatalf("%s was redone", f)
			}
		}
	}
}

// TestBadInputs: one clear line and a non-zero exit, the batch goes on.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	good, _ := os.ReadFile(filepath.Join(tiny, "ref", "case_main_lq.png"))
	inDir := filepath.Join(dir, "in")
	os.MkdirAll(inDir, 0o755)
	os.WriteFile(filepath.Join(inDir, "a_good.png"), good, 0o644)
	os.WriteFile(filepath.Join(inDir, "b_truncated.png"), good[:len(good)/3], 0o644)
	os.WriteFile(filepath.Join(inDir, "c_garbage.jpg"), []byte("not a jpeg"), 0o644)
	out, err := cli(t, tinyArgs("--process-size", "128", "-i", inDir, "-o", filepath.Join(dir, "out"))...)
	if err == nil {
		t.Fatalf("exit 0 with bad files:\n%s", out)
	}
	for _, want := range []string{"1 done, 0 skipped, 2 failed", "b_truncated.png", "c_garbage.jpg"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "a_good.png")); err != nil {
		t.Errorf("the good file was not written: %v", err)
	}

	// A decompression bomb is refused from its header.
	bomb := filepath.Join(dir, "bomb.png")
	os.WriteFile(bomb, pngHeader(100000, 100000), 0o644)
	out, err = cli(t, tinyArgs("-i", bomb, "-o", filepath.Join(dir, "bomb_out.png"))...)
	if err == nil || !strings.Contains(out, "too large") {
		t.Errorf("bomb: err %v\n%s", err, out)
	}

	// An output that would be absurdly large is refused before any work.
	out, err = cli(t, tinyArgs("--process-size", "128", "--max-output-pixels", "10000", "-i", filepath.Join(tiny, "ref", "case_main_lq.png"), "-o", filepath.Join(dir, "big.png"))...)
	if err == nil || !strings.Contains(out, "too large") {
		t.Errorf("output limit: err %v\n%s", err, out)
	}

	// A model folder missing a component, and a LoRA that does not fit.
	broken := filepath.Join(dir, "model")
	copyDir(t, filepath.Join(tiny, "model"), broken)
	os.RemoveAll(filepath.Join(broken, "vae"))
	in := filepath.Join(tiny, "ref", "case_main_lq.png")
	out, err = cli(t, "upscale", "--model", broken, "--lora", filepath.Join(tiny, "osediff_tiny.pkl"), "--tags", "x", "--offline", "-i", in, "-o", filepath.Join(dir, "o1.png"))
	if err == nil || !strings.Contains(out, "vae") {
		t.Errorf("missing vae: err %v\n%s", err, out)
	}
	out, err = cli(t, "upscale", "--model", filepath.Join(tiny, "model"), "--lora", filepath.Join("../../testdata/dape-tiny/weights/dape_tiny.pth"), "--tags", "x", "--offline", "-i", in, "-o", filepath.Join(dir, "o2.png"))
	if err == nil || !strings.Contains(out, "LoRA") {
		t.Errorf("wrong LoRA: err %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, "panic") || strings.Contains(line, "goroutine") {
			t.Fatalf("crash output:\n%s", out)
		}
	}
}

// pngHeader is a PNG signature and IHDR claiming w×h (no pixel data).
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte{0, 0, 0, 13, 'I', 'H', 'D', 'R', byte(w >> 24), byte(w >> 16), byte(w >> 8), byte(w), byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h), 8, 2, 0, 0, 0}
	b.Write(ihdr)
	crc := crc32IEEE(ihdr[4:])
	b.Write([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	return b.Bytes()
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// --weights and --precision from the command line: fp16 weights and the
// bf16 path (bf16-only weights by default) stay close to the fp32 output;
// an unknown storage is refused before anything loads.
func TestUpscaleWeightsFlag(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(tiny, "ref", "case_main_lq.png")
	run := func(name string, flags ...string) *imageio.RGB8 {
		out := filepath.Join(dir, name+".png")
		if msg, err := cli(t, tinyArgs(append(flags, "--process-size", "128", "-i", in, "-o", out)...)...); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, msg)
		}
		return readRGB(t, out)
	}
	ref := run("fp32")
	for _, c := range []struct {
		name  string
		flags []string
		min   float64
	}{{"fp16", []string{"--weights", "fp16"}, 50}, {"bf16", []string{"--precision", "bf16"}, 40}} {
		got := run(c.name, c.flags...)
		var se float64
		for i := range ref.Pix {
			d := float64(ref.Pix[i]) - float64(got.Pix[i])
			se += d * d
		}
		db := 10 * math.Log10(255*255*float64(len(ref.Pix))/math.Max(se, 1e-12))
		t.Logf("%s: PSNR %.1f dB against the fp32 output", c.name, db)
		if db < c.min {
			t.Errorf("%s: PSNR %.1f dB < %g", c.name, db, c.min)
		}
	}
	if msg, err := cli(t, tinyArgs("--weights", "int8", "-i", in, "-o", filepath.Join(dir, "x.png"))...); err == nil || !strings.Contains(msg, "int8") {
		t.Errorf("--weights int8 accepted: %v\n%s", err, msg)
	}
}

func TestByteSizeFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"2GiB", 2 << 30, true}, {"512MiB", 512 << 20, true}, {"1.5GB", 1500000000, true},
		{"100", 100, true}, {"64 KiB", 64 << 10, true}, {"auto", osediff.SpillAuto, true},
		{"-1", 0, false}, {"lots", 0, false}, {"GiB", 0, false},
	} {
		var b byteSize
		err := b.Set(tc.in)
		if (err == nil) != tc.ok || tc.ok && int64(b) != tc.want {
			t.Errorf("Set(%q) = %d, %v; want %d, ok %v", tc.in, b, err, tc.want, tc.ok)
		}
	}
	b := byteSize(2 << 30)
	if b.String() != "2GiB" {
		t.Errorf("String() = %q", b.String())
	}
}
