package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/orchestrator"
)

type recoverOptions struct {
	force  bool
	prefer string
}

func (o *recoverOptions) validate() error {
	switch o.prefer {
	case "", "source", "destination":
		return nil
	}
	return usagef("--prefer %q: give source or destination", o.prefer)
}

// recoverLong is the help of `ferry recover`: how it decides, when it waits,
// and the risk of --prefer.
const recoverLong = `Recover reads the journal's unfinished migrations (their ferry process is gone),
asks both hosts where the VM actually is, aborts a migration job left running,
and converges to exactly one running copy: the source if the migration had not
taken over, the destination if it had. Each row ends completed or rolled_back.
Running it again is harmless.

When a host does not answer, recover cannot know whether the guest already
runs there (the destination may have started it at the switchover). It then
keeps the row and its reservation, touches nothing, says what it waits for,
and exits 4: run it again when the host is back.

--prefer source|destination decides for rows ferry cannot decide itself (a
host down, a post-copy split between hosts); it is ignored where ferry can.
It keeps the preferred copy (resumed, or booted from its disks if it is not
running), and destroys and undefines the other copy where that host answers.
The risk is yours: if the other host is down and already runs the guest,
two copies run on the same disks when it comes back (remove it there before
it does); --prefer source after the destination ran loses what the guest did
since the switchover and can leave its disks inconsistent with its memory;
in a split post-copy either choice loses the guest's memory state.`

func newRecoverCmd(a *app) *cobra.Command {
	o := &recoverOptions{}
	cmd := &cobra.Command{
		Use:   "recover [ID]",
		Short: "Finish migrations a crash interrupted: exactly one running copy of each VM",
		Long:  recoverLong,
		Example: `  ferry recover
  ferry recover 3f2a9c1e --force
  ferry recover 3f2a9c1e --prefer source   # host2 is gone for good`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			opt := orchestrator.RecoverOptions{Force: o.force, Prefer: o.prefer}
			if len(args) == 1 {
				opt.ID = args[0]
			}
			res, rerr := c.Recover(cmd.Context(), opt)
			return printRecovered(cmd.OutOrStdout(), a, res, rerr)
		},
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "also take over migrations whose ferry process still runs")
	cmd.Flags().StringVar(&o.prefer, "prefer", "", "source or destination: decide rows ferry cannot decide itself (a host down); see above for the risk")
	return cmd
}

// printRecovered writes what recover did to each row, as JSON or for humans;
// rerr, recover's own outcome, is what the command returns.
func printRecovered(out io.Writer, a *app, res []orchestrator.RecoverResult, rerr error) error {
	if a.json() {
		if err := writeJSONList(out, res); err != nil {
			return err
		}
		return rerr
	}
	if len(res) == 0 && rerr == nil {
		fmt.Fprintln(out, "nothing to recover: no unfinished migrations in the journal")
	}
	for _, r := range res {
		switch {
		case r.Skipped != "":
			fmt.Fprintf(out, "%s %s: skipped, %s\n", r.ID[:8], r.VM, r.Skipped)
		case r.WaitingFor != "":
			fmt.Fprintf(out, "%s %s: waiting for the %s; nothing was changed.\n  %s\n", r.ID[:8], r.VM, r.WaitingFor, r.Note)
		case r.Error != "":
			fmt.Fprintf(out, "%s %s: NOT recovered: %s\n", r.ID[:8], r.VM, r.Error)
		default:
			fmt.Fprintf(out, "%s %s: %s -> %s, runs on %s", r.ID[:8], r.VM, r.Before, r.After, r.RunsOn)
			if r.Note != "" {
				fmt.Fprintf(out, " (%s)", r.Note)
			}
			fmt.Fprintln(out)
		}
		for _, h := range r.HookErrors {
			fmt.Fprintf(out, "  warning: %s\n", h)
		}
	}
	return rerr
}
