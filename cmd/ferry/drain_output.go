package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/units"
)

// drainPrinter shows a drain's progress: a line whenever a VM changes state
// or stage, and a summary (redrawn in place on a terminal, every 5 s
// otherwise).
type drainPrinter struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	start    time.Time
	seen     map[string]string // vm -> "state/stage"
	line     statusLine
	lastSumm time.Time
}

func newDrainPrinter(w io.Writer, tty bool) *drainPrinter {
	return &drainPrinter{w: w, tty: tty, start: time.Now(), seen: map[string]string{}, line: statusLine{w: w}}
}

func (p *drainPrinter) update(r drain.Report) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for _, v := range r.VMs {
		key := v.State + "/" + v.Stage
		if v.State != drain.VMMoving {
			key = v.State
		}
		if p.seen[v.VM] == key {
			continue
		}
		first := p.seen[v.VM] == ""
		p.seen[v.VM] = key
		if first && v.State == drain.VMPending {
			continue
		}
		lines = append(lines, fmt.Sprintf("%7s  %s", dur(time.Since(p.start)), vmLine(v)))
	}
	summ := fmt.Sprintf("%7s  %s: %s", dur(time.Since(p.start)), r.Host, drainSummary(r))
	if p.tty {
		for _, l := range lines {
			p.line.keep(l)
		}
		p.line.redraw(summ)
		return
	}
	for _, l := range lines {
		fmt.Fprintln(p.w, l)
	}
	if len(lines) > 0 && time.Since(p.lastSumm) >= 5*time.Second {
		fmt.Fprintln(p.w, summ)
		p.lastSumm = time.Now()
	}
}

func (p *drainPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line.end()
}

// drainSummary is the one-line state of a drain.
func drainSummary(r drain.Report) string {
	s := fmt.Sprintf("%d/%d moved, %d moving, %d failed, %d left, %s sent", r.Moved, len(r.VMs),
		countState(&r, drain.VMMoving), r.Failed, r.Left-countState(&r, drain.VMMoving), units.IEC(r.SentBytes))
	if n := countState(&r, drain.VMNotStarted); n > 0 {
		s += fmt.Sprintf(", %d not started", n)
	}
	if n := countState(&r, drain.VMSkipped); n > 0 {
		s += fmt.Sprintf(", %d skipped", n)
	}
	return s
}

// vmLine describes one VM of a drain.
func vmLine(v drain.VM) string {
	head := fmt.Sprintf("%-16s %-5s %9s", v.VM, v.Kind, units.IEC(v.MemoryBytes))
	switch v.State {
	case drain.VMMoving:
		s := fmt.Sprintf("%s  -> %-10s %s", head, v.Dest, v.Stage)
		if v.Percent > 0 {
			s += fmt.Sprintf(" %.0f%%", v.Percent)
		}
		if v.Attempts > 1 {
			s += fmt.Sprintf(" (attempt %d)", v.Attempts)
		}
		return s
	case drain.VMMoved:
		s := fmt.Sprintf("%s  -> %-10s moved", head, v.Dest)
		if v.Kind == "live" {
			s += fmt.Sprintf(", downtime %d ms", v.DowntimeMS)
		}
		if !v.StartedAt.IsZero() && !v.FinishedAt.IsZero() {
			s += fmt.Sprintf(", %s", dur(v.FinishedAt.Sub(v.StartedAt)))
		}
		return s
	case drain.VMFailed:
		return fmt.Sprintf("%s  FAILED: %s", head, v.Error)
	case drain.VMPending:
		if v.Dest != "" { // a dry run's plan
			return fmt.Sprintf("%s  -> %-10s %s", head, v.Dest, v.Reason)
		}
		return head + "  pending"
	}
	return fmt.Sprintf("%s  %s: %s", head, strings.ReplaceAll(v.State, "_", " "), firstOf(v.Reason, v.Error))
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// printDrainReport writes the outcome for humans.
func printDrainReport(w io.Writer, r *drain.Report) {
	switch r.State {
	case drain.StatePlanned:
		printf(w, "drain plan for %s (dry run, nothing changed; parallel %d, max %d per target):\n", r.Host, r.Parallel, r.MaxPerTarget)
	default:
		took := ""
		if !r.FinishedAt.IsZero() {
			took = " in " + dur(r.FinishedAt.Sub(r.StartedAt))
		}
		printf(w, "drain %s of %s: %s%s\n", short(r.ID), r.Host, r.State, took)
	}
	for _, n := range r.Recovered {
		printf(w, "  recovered first: %s\n", n)
	}
	for _, v := range r.VMs {
		printf(w, "  %s\n", vmLine(v))
	}
	if r.State == drain.StatePlanned {
		return
	}
	printf(w, "%s\n", drainSummary(*r))
	switch {
	case r.State == drain.StateRunning:
		printf(w, "still running (owner %s)\n", r.Owner)
	case r.Empty:
		printf(w, "%s is empty and stays in maintenance; 'ferry undrain %s' returns it to service\n", r.Host, r.Host)
	default:
		printf(w, "%s is NOT empty:\n", r.Host)
		for _, s := range r.Remaining {
			printf(w, "  %s\n", s)
		}
		if r.Error != "" && len(r.Remaining) == 0 {
			printf(w, "  %s\n", r.Error)
		}
		printf(w, "run the same command again to continue\n")
	}
}
