package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/units"
)

// statusLine draws on a terminal: lines that stay, and below them one
// status line redrawn in place.
type statusLine struct {
	w     io.Writer
	width int // length of the redrawn line now on screen
}

// keep prints a line that stays, over the status line.
func (l *statusLine) keep(s string) {
	fmt.Fprintf(l.w, "\r%s%s\n", s, l.pad(s))
	l.width = 0
}

// redraw replaces the status line.
func (l *statusLine) redraw(s string) {
	fmt.Fprintf(l.w, "\r%s%s", s, l.pad(s))
	l.width = len(s)
}

// pad blanks what a longer status line left.
func (l *statusLine) pad(s string) string {
	if n := l.width - len(s); n > 0 {
		return strings.Repeat(" ", n)
	}
	return ""
}

// end leaves the status line on screen and moves below it.
func (l *statusLine) end() {
	if l.width > 0 {
		fmt.Fprintln(l.w)
		l.width = 0
	}
}

// progressPrinter shows a migration's progress: one redrawn line on a
// terminal, plain lines (stage changes and one a second) otherwise.
type progressPrinter struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	line      statusLine
	lastStage journal.Stage
	lastLine  time.Time
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	return &progressPrinter{w: w, tty: tty, line: statusLine{w: w}, lastStage: -1}
}

func (p *progressPrinter) update(pr orchestrator.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := formatProgress(pr)
	if p.tty {
		// Stage changes and policy decisions stay on screen; the figures
		// line below them is redrawn in place.
		if pr.Message != "" {
			p.line.keep(line)
		} else {
			p.line.redraw(line)
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
	p.line.end()
}

func formatProgress(pr orchestrator.Progress) string {
	head := fmt.Sprintf("[%d %-13s] %7s", int(pr.Stage), pr.StageName, dur(pr.Elapsed))
	l := pr.Live
	if l == nil {
		l = &orchestrator.LiveProgress{}
	}
	if pr.Message != "" && l.TotalBytes == 0 {
		return head + "  " + pr.Message
	}
	s := fmt.Sprintf("%s  %5.1f%%  iter %d  remaining %s  dirty %s  bw %s  expected downtime %s (limit %d ms)",
		head, pr.Percent, l.Iteration, units.IEC(l.RemainingBytes), rate(l.DirtyBytesPerSec), rate(l.BandwidthBytesPerSec),
		dur(l.ExpectedDowntime), l.DowntimeLimitMS)
	if l.ThrottlePct > 0 {
		s += fmt.Sprintf("  throttle %d%%", l.ThrottlePct)
	}
	if l.Postcopy {
		s += "  post-copy"
	}
	if pr.Message != "" {
		s += "  " + pr.Message
	}
	return s
}
