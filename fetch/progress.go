package fetch

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// State is the phase a Progress event reports.
type State int

const (
	Checking    State = iota // hashing a file already in place
	Downloading              // bytes arriving (Done counts the resumed part too)
	Verifying                // hashing the finished download
	Done                     // stored and verified
	Cached                   // already in place and verified; nothing downloaded
	Retrying                 // the transfer broke; resuming from Done bytes
)

func (s State) String() string {
	switch s {
	case Checking:
		return "checking"
	case Downloading:
		return "downloading"
	case Verifying:
		return "verifying"
	case Done:
		return "done"
	case Cached:
		return "cached"
	case Retrying:
		return "retrying"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Progress is one event of Fetch.
type Progress struct {
	Name         string // the item's Name
	Index, Count int    // item Index (0-based) of Count
	State        State
	Done         int64 // bytes of the file so far
	Total        int64 // file size, -1 when unknown
	Err          error // the broken transfer, with Retrying
}

// TextProgress returns a Progress callback that draws one status line per
// file on w (a terminal: the line is redrawn with "\r" at most 10 times a
// second and ended when the file is done).
func TextProgress(w io.Writer) func(Progress) {
	var last time.Time
	var start time.Time
	var startBytes int64
	return func(p Progress) {
		now := time.Now()
		prefix := fmt.Sprintf("[%d/%d] %s", p.Index+1, p.Count, p.Name)
		switch p.State {
		case Cached:
			fmt.Fprintf(w, "\r%s: cached\n", prefix)
			return
		case Done:
			fmt.Fprintf(w, "\r%s: %s done%s\n", prefix, humanBytes(p.Done), strings.Repeat(" ", 30))
			return
		case Retrying:
			fmt.Fprintf(w, "\r%s: transfer broke at %s (%v), resuming\n", prefix, humanBytes(p.Done), p.Err)
			start = time.Time{}
			return
		case Checking, Verifying:
			fmt.Fprintf(w, "\r%s: %s...", prefix, p.State)
			return
		}
		if start.IsZero() {
			start, startBytes = now, p.Done
		}
		if now.Sub(last) < 100*time.Millisecond && p.Done != p.Total {
			return
		}
		last = now
		rate := ""
		if dt := now.Sub(start).Seconds(); dt > 0.5 {
			rate = fmt.Sprintf(" %s/s", humanBytes(int64(float64(p.Done-startBytes)/dt)))
		}
		if p.Total > 0 {
			const width = 30
			frac := float64(p.Done) / float64(p.Total)
			n := int(frac * width)
			bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
			fmt.Fprintf(w, "\r%s [%s] %3.0f%% %s/%s%s   ", prefix, bar, 100*frac, humanBytes(p.Done), humanBytes(p.Total), rate)
		} else {
			fmt.Fprintf(w, "\r%s %s%s   ", prefix, humanBytes(p.Done), rate)
		}
		if p.Done == p.Total {
			start = time.Time{}
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
