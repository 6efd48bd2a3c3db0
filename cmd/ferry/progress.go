package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/orchestrator"
)

// progressPrinter shows a migration's progress: one redrawn line on a
// terminal, plain lines (stage changes and one a second) otherwise.
type progressPrinter struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	lastStage orchestrator.Stage
	lastLine  time.Time
	width     int // length of the redrawn line now on screen
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	return &progressPrinter{w: w, tty: tty, lastStage: -1}
}

func (p *progressPrinter) update(pr orchestrator.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := formatProgress(pr)
	if p.tty {
		pad := ""
		if n := p.width - len(line); n > 0 {
			pad = strings.Repeat(" ", n) // blank what the longer previous line left
		}
		if pr.Message != "" {
			// Stage changes and policy decisions stay on screen; the
			// figures line below them is redrawn in place.
			fmt.Fprintf(p.w, "\r%s%s\n", line, pad)
			p.width = 0
		} else {
			fmt.Fprintf(p.w, "\r%s%s", line, pad)
			p.width = len(line)
		}
		return
	}
	if pr.Stage != p.lastStage || pr.Message != "" || time.Since(p.lastLine) >= time.Second {
		fmt.Fprintln(p.w, line)
		p.lastLine = time.Now()
		p.lastStage = pr.Stage
	}
}

func (p *progressPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
	}
}

func formatProgress(pr orchestrator.Progress) string {
	head := fmt.Sprintf("[%d %-13s] %7s", int(pr.Stage), pr.StageName, dur(pr.Elapsed))
	if pr.Message != "" && pr.TotalBytes == 0 {
		return head + "  " + pr.Message
	}
	s := fmt.Sprintf("%s  %5.1f%%  iter %d  remaining %s  dirty %s  bw %s  expected downtime %s (limit %d ms)",
		head, pr.Percent, pr.Iteration, bytesIEC(pr.RemainingBytes), rate(pr.DirtyBytesPerSec), rate(pr.BandwidthBytesPerSec),
		dur(pr.ExpectedDowntime), pr.DowntimeLimitMS)
	if pr.ThrottlePct > 0 {
		s += fmt.Sprintf("  throttle %d%%", pr.ThrottlePct)
	}
	if pr.Postcopy {
		s += "  post-copy"
	}
	if pr.Message != "" {
		s += "  " + pr.Message
	}
	return s
}
