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
		BeforeShownW       float64
		Status, Meta, Bar  string
		Download, DLName   string
		Cancel             bool
	}
	const readView = `(() => { const $ = id => document.getElementById(id);
		const a = $('after'), b = $('beforeImg'), ar = a.getBoundingClientRect();
		return {NaturalW: a.naturalWidth, NaturalH: a.naturalHeight, ShownW: ar.width, ShownH: ar.height,
			InputW: b.naturalWidth, InputH: b.naturalHeight, BeforeShownW: $('before').getBoundingClientRect().width,
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
	if d := v.BeforeShownW - v.ShownW/2; d < -3 || d > 3 {
		t.Errorf("the input covers %.0f px of %.0f with the slider at 50%%", v.BeforeShownW, v.ShownW)
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
	w, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.getElementById('before').getBoundingClientRect().width`))
	must("slider", err)
	if d := w - v.ShownW/4; d < -3 || d > 3 {
		t.Errorf("slider at 25%%: the input covers %.0f px of %.0f", w, v.ShownW)
	}
	must("slider back", chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.getElementById('slider'); s.value = 50; s.dispatchEvent(new Event('input')); })()`)))

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	must("screenshot", err)
	dir := os.Getenv("OSEDIFF_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "serve_page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the page logged errors:\n%s", strings.Join(problems, "\n"))
	}
	p.alive()
}
