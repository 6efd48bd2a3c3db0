package main

import (
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/units"
)

// What ferry migrate --cold prints for humans: progress, plan and result.

// coldPrinter shows a cold move's progress: every message, and the copy's
// numbers redrawn on a terminal or once a second otherwise.
type coldPrinter struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	lastLine time.Time
	line     statusLine
}

func newColdPrinter(w io.Writer, tty bool) *coldPrinter {
	return &coldPrinter{w: w, tty: tty, line: statusLine{w: w}}
}

func (p *coldPrinter) update(pr orchestrator.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	head := fmt.Sprintf("[%d %-13s] %7s", int(pr.Stage), pr.StageName, dur(time.Duration(pr.ElapsedMS)*time.Millisecond))
	c := pr.Cold
	if c == nil {
		c = &orchestrator.ColdProgress{}
	}
	if pr.Message != "" {
		if p.tty {
			p.line.keep(head + "  " + pr.Message)
		} else {
			fmt.Fprintf(p.w, "%s  %s\n", head, pr.Message)
		}
		return
	}
	if c.TotalBytes == 0 {
		return
	}
	line := fmt.Sprintf("%s  %5.1f%%  %d/%d %s  %s sent  %s  ETA %s", head, pr.Percent, c.Index+1, c.Count, c.Artifact,
		units.IEC(uint64(c.MoveSentBytes)), rate(c.RateBytesPerSec), dur(time.Duration(c.ETAMS)*time.Millisecond))
	if p.tty {
		p.line.redraw(line)
		return
	}
	if time.Since(p.lastLine) >= time.Second {
		fmt.Fprintln(p.w, line)
		p.lastLine = time.Now()
	}
}

func (p *coldPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line.end()
}

func printColdPlan(w io.Writer, r *orchestrator.Result) {
	p := r.Cold.Plan
	how := "sparse streams"
	if !p.Sparse {
		how = p.SparseNote
	}
	fmt.Fprintf(w, "cold move plan for %s: %s -> %s (%s)\n", r.VM, r.Source, r.Dest, how)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ARTIFACT\tFORMAT\tVIRTUAL\tALLOCATED\tFILE\tTO MOVE\tSOURCE\tDESTINATION")
	for _, a := range p.Artifacts {
		dst := a.DstPath
		if a.DstPool != "" {
			dst += " (pool " + a.DstPool + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name(), a.Format, units.IEC(a.CapacityBytes), units.IEC(a.AllocatedBytes),
			units.IEC(a.PhysicalBytes), units.IEC(a.WireBytes(p.Sparse)), a.SrcPath, dst)
	}
	tw.Flush()
	for _, a := range p.Artifacts {
		if a.Note != "" {
			fmt.Fprintf(w, "  note: %s: %s\n", a.Name(), a.Note)
		}
	}
	fmt.Fprintf(w, "  bytes to move     %s (files: %s)\n", units.IEC(p.BytesToMove), units.IEC(p.TotalBytes))
	for _, ps := range p.Pools {
		mark := "ok"
		if !ps.Enough {
			mark = "NOT ENOUGH"
		}
		if ps.New {
			fmt.Fprintf(w, "  destination space %s: needs %s, no pool there yet (created when copying)\n", ps.Path, units.IEC(ps.NeedBytes))
			continue
		}
		fmt.Fprintf(w, "  destination space %s (%s): needs %s, %s free: %s\n", ps.Pool, ps.Path, units.IEC(ps.NeedBytes), units.IEC(ps.AvailableBytes), mark)
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "  problem: %s\n", pr)
	}
}

func printColdResult(w io.Writer, r *orchestrator.Result) {
	if r == nil || r.Cold == nil {
		return
	}
	c := r.Cold
	if c.PlanOnly || (r.State == journal.StateRefused && c.Plan != nil) {
		if c.Plan != nil {
			printColdPlan(w, r)
		}
		for _, ch := range r.Checks {
			mark := "ok  "
			if !ch.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %-22s %s\n", mark, ch.Name, ch.Detail)
		}
		if r.State == "plan" {
			fmt.Fprintf(w, "plan only: nothing was changed\n")
		}
		return
	}
	switch r.State {
	case journal.StateCompleted:
		fmt.Fprintf(w, "moved %s cold: %s -> %s\n", r.VM, r.Source, r.Dest)
		fmt.Fprintf(w, "  total time    %s\n", dur(time.Duration(r.TotalMS)*time.Millisecond))
		if c.Plan != nil {
			how := "sparse"
			if !c.Plan.Sparse {
				how = c.Plan.SparseNote
			}
			fmt.Fprintf(w, "  data sent     %s (%s) for %s of files\n", units.IEC(uint64(c.SentBytes)), how, units.IEC(c.Plan.TotalBytes))
		}
		if c.ResumedFrom != "" {
			fmt.Fprintf(w, "  resumed       %s\n", c.ResumedFrom)
		}
		if c.Shutdown != "" {
			fmt.Fprintf(w, "  shutdown      %s\n", c.Shutdown)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, a := range c.Artifacts {
			state := a.State
			if a.Skipped {
				state += " (skipped: copied by the interrupted run)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", a.Name(), units.IEC(uint64(a.SentBytes)), a.Checksum, a.DstPath, state)
		}
		tw.Flush()
		var kept []string
		for _, a := range c.Artifacts {
			if a.State == "kept" && a.KeepReason != "" {
				kept = append(kept, fmt.Sprintf("%s: %s", a.SrcPath, a.KeepReason))
			}
		}
		switch {
		case c.KeepSource:
			fmt.Fprintf(w, "  source        definition removed, files kept (--keep-source)\n")
		case len(kept) > 0:
			fmt.Fprintf(w, "  source        definition and files removed, except:\n")
			for _, k := range kept {
				fmt.Fprintf(w, "    kept        %s\n", k)
			}
		default:
			fmt.Fprintf(w, "  source        definition and files removed\n")
		}
		if c.StartedOnDest {
			fmt.Fprintf(w, "  started       on %s\n", r.Dest)
		}
		fmt.Fprintf(w, "  migration id  %s\n", r.ID)
		for _, s := range append(c.Warnings, r.HookErrors...) {
			fmt.Fprintf(w, "  warning       %s\n", s)
		}
	case journal.StateRolledBack:
		fmt.Fprintf(w, "rolled back: %s stays on %s, the copies on %s were removed (migration id %s)\n", r.VM, r.Source, r.Dest, r.ID)
	case journal.StateFailed:
		fmt.Fprintf(w, "cold move %s of %s needs recovery: run `ferry recover`\n", r.ID, r.VM)
	}
}
