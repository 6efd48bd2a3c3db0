package main

import (
	"fmt"
	"io"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/units"
)

// What ferry migrate prints for humans: the live result and plan.

func printResult(w io.Writer, r *orchestrator.Result) {
	if r == nil || r.Live == nil {
		return
	}
	l := r.Live
	if l.Plan != nil && r.DryRun {
		printPlan(w, r)
	}
	if r.DryRun {
		for _, ch := range r.Checks {
			mark := "ok  "
			if !ch.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %-22s %s\n", mark, ch.Name, ch.Detail)
		}
		if r.State == "dry_run" {
			fmt.Fprintf(w, "dry run: %s can move from %s to %s; nothing was changed\n", r.VM, r.Source, r.Dest)
		}
		return
	}
	switch r.State {
	case journal.StateCompleted:
		fmt.Fprintf(w, "migrated %s: %s -> %s\n", r.VM, r.Source, r.Dest)
		fmt.Fprintf(w, "  total time    %s (migration %s)\n", dur(time.Duration(r.TotalMS)*time.Millisecond), dur(time.Duration(l.MigrationMS)*time.Millisecond))
		fmt.Fprintf(w, "  downtime      %s\n", dur(l.Downtime))
		fmt.Fprintf(w, "  data sent     %s of %s memory\n", units.IEC(l.DataSent), units.IEC(l.MemoryBytes))
		fmt.Fprintf(w, "  iterations    %d\n", l.Iterations)
		fmt.Fprintf(w, "  streams       %s\n", streamsText(l))
		if l.Strategy != "" {
			how := l.Strategy
			if l.Postcopy {
				how += ", finished in post-copy"
			}
			fmt.Fprintf(w, "  strategy      %s (%d policy actions)\n", how, len(l.PolicyActions))
		}
		fmt.Fprintf(w, "  migration id  %s\n", r.ID)
		for _, h := range append(l.Warnings, r.HookErrors...) {
			fmt.Fprintf(w, "  warning       %s\n", h)
		}
	case journal.StateRolledBack:
		fmt.Fprintf(w, "rolled back: %s keeps running on %s (migration id %s)\n", r.VM, r.Source, r.ID)
		for _, h := range r.HookErrors {
			fmt.Fprintf(w, "  warning       %s\n", h)
		}
	case journal.StateFailed:
		fmt.Fprintf(w, "migration %s of %s needs recovery: run `ferry recover`\n", r.ID, r.VM)
	}
}

func printPlan(w io.Writer, r *orchestrator.Result) {
	p := r.Live.Plan
	in := p.Inputs
	fmt.Fprintf(w, "plan for %s: %s -> %s\n", r.VM, r.Source, r.Dest)
	fmt.Fprintf(w, "  memory            %s\n", units.IEC(uint64(in.MemoryBytes)))
	fmt.Fprintf(w, "  dirty rate        %s (%s)\n", rate(uint64(in.DirtyBytesPerSec)), p.DirtyRateSource)
	fmt.Fprintf(w, "  bandwidth         %s (%s)\n", rate(uint64(in.BandwidthBytesPerSec)), p.BandwidthSource)
	pre := p.Precopy
	if pre.Converges {
		fmt.Fprintf(w, "  plain pre-copy    converges at %d ms: %d rounds, %s, %s sent, pause %s\n", pre.DowntimeLimitMS, pre.Rounds,
			dur(pre.Total()), units.IEC(uint64(pre.SentBytes)), dur(pre.Downtime()))
	} else {
		fmt.Fprintf(w, "  plain pre-copy    does not converge at %d ms (needs a downtime limit of %s)\n", pre.DowntimeLimitMS,
			dur(time.Duration(pre.NeededDowntimeMS)*time.Millisecond))
	}
	fmt.Fprintf(w, "  strategy          %s: %s\n", p.Strategy, p.Reason)
	e := p.Expected
	fmt.Fprintf(w, "  expected          %s: %s, %s sent, pause %s (simulated)\n", e.Outcome, dur(time.Duration(e.TotalMS)*time.Millisecond),
		units.IEC(uint64(e.SentBytes)), dur(time.Duration(e.DowntimeMS)*time.Millisecond))
	fmt.Fprintf(w, "  ceiling, deadline %s, %s then %s\n", dur(time.Duration(p.CeilingMS)*time.Millisecond),
		dur(time.Duration(p.DeadlineMS)*time.Millisecond), p.OnTimeout)
	fmt.Fprintf(w, "  streams           %s\n", streamsText(r.Live))
	for _, warn := range r.Live.Warnings {
		fmt.Fprintf(w, "  warning           %s\n", warn)
	}
}

// streamsText says whether guest memory crossed (or will cross) encrypted.
func streamsText(l *orchestrator.LiveResult) string {
	if l.MigrationTLS {
		return "encrypted (migration TLS)"
	}
	return "not encrypted (migration TLS off or unavailable; see the migration-tls check)"
}
