package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/orchestrator"
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

func (p *drainPrinter) update(r orchestrator.DrainReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for _, v := range r.VMs {
		key := v.State + "/" + v.Stage
		if v.State != orchestrator.DrainVMMoving {
			key = v.State
		}
		if p.seen[v.VM] == key {
			continue
		}
		first := p.seen[v.VM] == ""
		p.seen[v.VM] = key
		if first && v.State == orchestrator.DrainVMPending {
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
func drainSummary(r orchestrator.DrainReport) string {
	s := fmt.Sprintf("%d/%d moved, %d moving, %d failed, %d left, %s sent", r.Moved, len(r.VMs),
		countState(&r, orchestrator.DrainVMMoving), r.Failed, r.Left-countState(&r, orchestrator.DrainVMMoving), bytesIEC(r.SentBytes))
	if n := countState(&r, orchestrator.DrainVMNotStarted); n > 0 {
		s += fmt.Sprintf(", %d not started", n)
	}
	if n := countState(&r, orchestrator.DrainVMSkipped); n > 0 {
		s += fmt.Sprintf(", %d skipped", n)
	}
	return s
}

// vmLine describes one VM of a drain.
func vmLine(v orchestrator.DrainVM) string {
	head := fmt.Sprintf("%-16s %-5s %9s", v.VM, v.Kind, bytesIEC(v.MemoryBytes))
	switch v.State {
	case orchestrator.DrainVMMoving:
		s := fmt.Sprintf("%s  -> %-10s %s", head, v.Dest, v.Stage)
		if v.Percent > 0 {
			s += fmt.Sprintf(" %.0f%%", v.Percent)
		}
		if v.Attempts > 1 {
			s += fmt.Sprintf(" (attempt %d)", v.Attempts)
		}
		return s
	case orchestrator.DrainVMMoved:
		s := fmt.Sprintf("%s  -> %-10s moved", head, v.Dest)
		if v.Kind == "live" {
			s += fmt.Sprintf(", downtime %d ms", v.DowntimeMS)
		}
		if !v.StartedAt.IsZero() && !v.FinishedAt.IsZero() {
			s += fmt.Sprintf(", %s", dur(v.FinishedAt.Sub(v.StartedAt)))
		}
		return s
	case orchestrator.DrainVMFailed:
		return fmt.Sprintf("%s  FAILED: %s", head, v.Error)
	case orchestrator.DrainVMPending:
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
func printDrainReport(w io.Writer, r *orchestrator.DrainReport) {
	switch r.State {
	case orchestrator.DrainPlanned:
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
	if r.State == orchestrator.DrainPlanned {
		return
	}
	printf(w, "%s\n", drainSummary(*r))
	switch {
	case r.State == orchestrator.DrainRunning:
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
