package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium (or another Chrome) on this machine.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestServePageInBrowser drives the page of `osediff serve` in headless
// chromium: choose an image through the file input, set the tags, upscale,
// wait for the result, and check that it is shown at the right size beside
// the input with a working slider and a download link. It saves a screenshot
// under $OSEDIFF_SCREENSHOT_DIR (else the test's temporary directory).
func TestServePageInBrowser(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no chromium binary installed (apt-get install chromium): the page is not tested in a browser")
	}
	// --tags "" so that no DAPE tagger is loaded: the page sends its own tags.
	p := startServe(t, "--tags", "")
	input, err := filepath.Abs(filepath.Join(tinyRef, "case_main_lq.png")) // 40×32
	if err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 760),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil { // start the browser with no timeout
		t.Fatalf("starting %s: %v", chromium, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// Every console error or uncaught exception fails the test.
	var mu sync.Mutex
	var problems []string
	msgs := chromedp.Console(bctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				mu.Lock()
				problems = append(problems, string(m.Type)+": "+m.Text+" ("+m.URL+")")
				mu.Unlock()
			}
		}
	}()

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, p.stderr)
		}
	}
	must("open the page", chromedp.Do(ctx,
		chromedp.Navigate(p.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("drop")),
	))
	title, err := chromedp.Run(ctx, chromedp.Title())
	must("title", err)
	if !strings.Contains(title, "OSEDiff") {
		t.Errorf("title %q", title)
	}
	disabled, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById('go').disabled`))
	must("button state", err)
	if !disabled {
		t.Error("the Upscale button is enabled before an image is chosen")
	}

	must("choose the image", chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{input}),
		chromedp.Poll[chromedp.Void](`!document.getElementById('go').disabled`),
		chromedp.SetValue(chromedp.ID("tags"), "building, city, sky"),
		chromedp.SetValue(chromedp.ID("scale"), "4"),
	))
	picked, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("drop")))
	must("the chosen file", err)
	if !strings.Contains(picked, "case_main_lq.png") {
		t.Errorf("drop zone shows %q, want the file name", picked)
	}

	t0 := time.Now()
	must("upscale and wait for the result", chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("go")),
		chromedp.WaitVisible(chromedp.ID("result")),
		chromedp.Poll[chromedp.Void](`(() => { const a = document.getElementById('after'), b = document.getElementById('beforeImg');
			return a.complete && a.naturalWidth > 0 && b.complete && b.naturalWidth > 0; })()`),
	))
	t.Logf("result shown %.2fs after the click", time.Since(t0).Seconds())

	type view struct {
		NaturalW, NaturalH int
		ShownW, ShownH     float64
		InputW, InputH     int
		Border             float64 // the divider's x in the comparison
		InputShownW        float64 // the input's box: the same as the result's
		InputClip          string
		SliderW            float64
		Pixelated          bool
		Status, Meta, Bar  string
		Download, DLName   string
		Cancel             bool
	}
	const readView = `(() => { const $ = id => document.getElementById(id);
		const a = $('after'), b = $('beforeImg'), ar = a.getBoundingClientRect(), d = $('divider').getBoundingClientRect();
		return {NaturalW: a.naturalWidth, NaturalH: a.naturalHeight, ShownW: ar.width, ShownH: ar.height,
			InputW: b.naturalWidth, InputH: b.naturalHeight, Border: d.left + d.width / 2 - ar.left,
			InputShownW: b.getBoundingClientRect().width, InputClip: getComputedStyle(b).clipPath,
			SliderW: $('slider').getBoundingClientRect().width, Pixelated: getComputedStyle(a).imageRendering === 'pixelated',
			Status: $('status').textContent, Meta: $('meta').textContent, Bar: $('bar').style.width,
			Download: $('download').href, DLName: $('download').download, Cancel: !$('cancel').hidden}; })()`
	v, err := chromedp.Run(ctx, chromedp.Evaluate[view](readView))
	must("read the page", err)
	t.Logf("page: %+v", v)
	if v.NaturalW != 160 || v.NaturalH != 128 {
		t.Errorf("result image %dx%d, want 160x128 (40x32 at x4)", v.NaturalW, v.NaturalH)
	}
	if v.InputW != 40 || v.InputH != 32 {
		t.Errorf("input image %dx%d, want 40x32", v.InputW, v.InputH)
	}
	if v.ShownW < 300 || v.ShownH < 200 {
		t.Errorf("result shown at %.0fx%.0f px: too small to compare", v.ShownW, v.ShownH)
	}
	if d := v.ShownH - v.ShownW*128/160; d < -2 || d > 2 {
		t.Errorf("result shown at %.0fx%.0f: aspect ratio lost", v.ShownW, v.ShownH)
	}
	if v.InputShownW != v.ShownW || v.SliderW != v.ShownW || !v.Pixelated {
		t.Errorf("input shown %.0f px wide, slider %.0f px, result %.0f px (want all equal); pixelated %v",
			v.InputShownW, v.SliderW, v.ShownW, v.Pixelated)
	}
	if d := v.Border - v.ShownW/2; d < -3 || d > 3 || v.InputClip != "inset(0px 50% 0px 0px)" {
		t.Errorf("slider at 50%%: border at %.0f px of %.0f, input clipped by %q", v.Border, v.ShownW, v.InputClip)
	}
	if !strings.HasPrefix(v.Status, "done") || v.Bar != "100%" || v.Cancel {
		t.Errorf("status %q, bar %q, cancel shown %v", v.Status, v.Bar, v.Cancel)
	}
	if !strings.Contains(v.Meta, "160×128") || !strings.Contains(v.Meta, "building, city, sky") {
		t.Errorf("meta %q", v.Meta)
	}
	if !strings.HasPrefix(v.Download, "blob:") || v.DLName != "case_main_lq_osediff.png" {
		t.Errorf("download link %q named %q", v.Download, v.DLName)
	}

	// The slider moves the border between input and result.
	must("move the slider", chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.getElementById('slider'); s.value = 25; s.dispatchEvent(new Event('input')); })()`)))
	v2, err := chromedp.Run(ctx, chromedp.Evaluate[view](readView))
	must("slider", err)
	if d := v2.Border - v.ShownW/4; d < -3 || d > 3 || v2.InputClip != "inset(0px 75% 0px 0px)" {
		t.Errorf("slider at 25%%: border at %.0f px of %.0f, input clipped by %q", v2.Border, v.ShownW, v2.InputClip)
	}
	must("slider back", chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.getElementById('slider'); s.value = 50; s.dispatchEvent(new Event('input')); })()`)))

	// A slower image: the page shows the pipeline's stages and a growing bar.
	slow := filepath.Join(t.TempDir(), "slow.png")
	if err := os.WriteFile(slow, slowPNG(t), 0o644); err != nil {
		t.Fatal(err)
	}
	const watch = `(() => { const $ = id => document.getElementById(id); window.seen = [];
		new MutationObserver(() => window.seen.push($('status').textContent + ' | ' + $('bar').style.width))
			.observe($('form'), {subtree: true, childList: true, attributes: true, characterData: true}); })()`
	must("upscale a slower image", chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](watch),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{slow}),
		chromedp.Click(chromedp.ID("go")),
		chromedp.Poll[chromedp.Void](`document.getElementById('status').textContent === 'done' && document.getElementById('after').naturalWidth === 384`),
	))
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.seen`))
	must("progress", err)
	stages := 0
	for _, s := range seen {
		if strings.Contains(s, "UNet") || strings.Contains(s, "VAE") {
			stages++
		}
	}
	if stages == 0 || !strings.HasSuffix(seen[len(seen)-1], "| 100%") {
		t.Errorf("the page showed no progress: %q", seen)
	}
	var shown []string
	for _, s := range seen {
		if len(shown) == 0 || shown[len(shown)-1] != s {
			shown = append(shown, s)
		}
	}
	t.Logf("progress shown (status | bar): %q", shown)

	// Cancel while it runs.
	canceled := p.metric(`osediff_errors_total{kind="canceled"}`)
	must("start again", chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("go")),
		chromedp.Poll[chromedp.Void](`/VAE|UNet|prompt/.test(document.getElementById('status').textContent)`),
	))
	running, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot while running", err)
	must("cancel", chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("cancel")),
		chromedp.Poll[chromedp.Void](`document.getElementById('status').textContent === 'canceled' && !document.getElementById('go').disabled`),
	))
	if got := p.metric(`osediff_errors_total{kind="canceled"}`); got != canceled+1 {
		t.Errorf("the server counted %v canceled jobs, want %v", got, canceled+1)
	}

	// Back to the first result for the screenshot.
	must("upscale again", chromedp.Do(ctx,
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{input}),
		chromedp.Click(chromedp.ID("go")),
		chromedp.Poll[chromedp.Void](`document.getElementById('status').textContent === 'done' && document.getElementById('after').naturalWidth === 160`),
	))
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot", err)
	dir := os.Getenv("OSEDIFF_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"serve_page.png": shot, "serve_page_running.png": running} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(b))
	}

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the page logged errors:\n%s", strings.Join(problems, "\n"))
	}
	p.alive()
}
