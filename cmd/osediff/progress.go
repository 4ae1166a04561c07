package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"

	"github.com/osediff-go/osediff/osediff"
)

// progress prints bars on a terminal and plain lines otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	quiet bool
	mu    sync.Mutex
}

func newProgress(w io.Writer, quiet bool) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, quiet: quiet}
}

func (p *progress) line(format string, args ...any) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

type imageBar struct {
	p     *progress
	bar   *progressbar.ProgressBar
	label string
	last  string
}

func (p *progress) imageBar(label string) *imageBar {
	b := &imageBar{p: p, label: label}
	if p.quiet {
		return b
	}
	if p.tty {
		b.bar = progressbar.NewOptions(100, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(label),
			progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish())
	}
	return b
}

func (b *imageBar) update(pr osediff.Progress) {
	if b.p.quiet {
		return
	}
	pct := int(pr.Percent())
	if b.bar != nil {
		desc := b.label + " " + pr.Stage
		if pr.Stage == "unet" && pr.Total > 1 {
			desc = fmt.Sprintf("%s unet tile %d/%d", b.label, pr.Done, pr.Total)
		}
		b.bar.Describe(desc)
		_ = b.bar.Set(pct)
		return
	}
	// Not a terminal: one quiet line per stage.
	if pr.Stage != b.last && pr.Stage != "done" {
		b.last = pr.Stage
		b.p.line("%s: %s", b.label, pr.Stage)
	}
}

func (b *imageBar) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
	}
}
