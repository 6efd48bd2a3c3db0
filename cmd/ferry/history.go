package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

type historyOptions struct {
	vm    string
	state string
	limit int
}

func newHistoryCmd(a *app) *cobra.Command {
	o := &historyOptions{}
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List past and running migrations from the journal, newest first",
		Example: `  ferry history
  ferry history --vm web-01 --limit 5
  ferry history --outcome rolled_back -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch o.state {
			case "", journal.StateRunning, journal.StateCompleted, journal.StateRefused, journal.StateRolledBack, journal.StateFailed:
			default:
				return usagef("--outcome %q: use running, completed, refused, rolled_back or failed", o.state)
			}
			if err := orchestrator.RangeListLimit.Check("--limit", int64(o.limit)); err != nil {
				return usageError{err}
			}
			j, err := a.journal(cmd.Context())
			if err != nil {
				return err
			}
			rows, err := j.List(cmd.Context(), journal.ListFilter{VM: o.vm, State: o.state, Limit: o.limit})
			if err != nil {
				return err
			}
			return writeList(cmd.OutOrStdout(), a, rows, "ID\tVM\tFROM\tTO\tSTATE\tSTAGE\tSTARTED\tDURATION\tDOWNTIME\tERROR", historyRow)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.vm, "vm", "", "only this VM (name or UUID)")
	// Not --state: that is the global state-database flag.
	f.StringVar(&o.state, "outcome", "", "only this state: running, completed, refused, rolled_back, failed")
	f.IntVar(&o.limit, "limit", 50, "at most this many rows (0: all)")
	return cmd
}

// historyRow is one migration in the `ferry history` table.
func historyRow(w io.Writer, r *journal.Record) {
	d, dt := "-", "-"
	if r.FinishedAt != nil {
		d = dur(r.FinishedAt.Sub(r.StartedAt))
	}
	if r.DowntimeMS != nil {
		dt = dur(time.Duration(*r.DowntimeMS) * time.Millisecond)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(r.ID), r.VM, dash(r.Source), dash(r.Dest), r.State, r.StageName,
		r.StartedAt.Local().Format("2006-01-02 15:04:05"), d, dt, truncate(r.Error, 70))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
