package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
)

type drainOptions struct {
	host         string
	parallel     int
	maxPerTarget int
	order        string
	runningOnly  bool
	dryRun       bool
	retries      int
	backoff      string
	to           []string
	avoid        []string
	prefer       []string
	reason       string
	cancel       bool
	status       bool
	// live-migration options applied to every running VM
	live liveFlags

	req drain.Request
}

// drainLong is the help of `ferry drain`: the order of a drain, its limits,
// how to stop it and what its exit code says.
const drainLong = `Empty HOST for maintenance.

The host is marked in maintenance first (persisted in the state database: no
placement, by any ferry process, picks it until 'ferry undrain'). Then every VM on
it gets a destination from the same rules as 'ferry place' (free memory after the
host reserve and the moves in flight, CPU compatibility, maintenance, name clash,
labels, most memory first so load spreads) and is moved: running VMs live (the
six-stage migration), stopped VMs cold (disks, NVRAM, definition), unless
--running-only. Paused or crashed VMs are left with the reason.

Limits: at most --parallel moves out of the host at once and at most
--max-per-target moves into any one destination. They are kept in the state
database, so they hold across ferry processes sharing it (two drains, or 'ferry
serve' and this command). VMs go smallest memory first (--order). A failed move
(rolled back: the VM still runs on HOST) is retried --retries times, waiting
--backoff, doubled each time. A VM no host can take fails at once, with every
host's reason.

Ctrl-C (or 'ferry drain HOST --cancel' from anywhere using the same state) stops
starting moves; moves in flight finish. A second Ctrl-C rolls them back. Running
the same command again continues with what is left on the host; moves a killed
ferry left behind are finished first (as 'ferry recover' would).

The result says whether HOST is empty (no VM defined on it; with --running-only,
none running) and, if not, what is left and why. Exit codes: 0 the host is empty,
1 VMs are left (or the drain was cancelled), 2 bad input or refused, 4 a move needs
'ferry recover'.`

func newDrainCmd(a *app) *cobra.Command {
	o := &drainOptions{}
	cmd := &cobra.Command{
		Use:   "drain HOST",
		Short: "Move every VM off a host (live for running ones, cold for stopped ones) and keep it in maintenance",
		Long:  drainLong,
		Example: `  ferry drain host1
  ferry drain host1 --dry-run
  ferry drain host1 --parallel 4 --max-per-target 2 --order largest
  ferry drain host1 --to host2,host3 --running-only --reason "BIOS update"
  ferry drain host1 --cancel
  ferry drain host1 --status -o json
  ferry undrain host1`,
		Args: oneArg("drain takes exactly one host (its inventory name)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.host = args[0]
			if err := o.validate(cmd); err != nil {
				return err
			}
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			c.Log = c.Log.WithField("cmd", "drain")
			switch {
			case o.cancel:
				return o.runCancel(cmd, a, c)
			case o.status:
				return o.runStatus(cmd, a, c)
			}
			return o.run(cmd, a, c)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// addFlags registers the flags of `ferry drain` on f.
func (o *drainOptions) addFlags(f *pflag.FlagSet) {
	f.IntVar(&o.parallel, "parallel", drain.DefaultParallel, "moves in flight out of the host at once")
	f.IntVar(&o.maxPerTarget, "max-per-target", drain.DefaultMaxPerTarget, "moves in flight into any one destination at once")
	f.StringVar(&o.order, "order", "smallest", "order of the VMs: smallest (memory first), largest or name")
	f.BoolVar(&o.runningOnly, "running-only", false, "move running VMs only; stopped ones stay (the host then counts as empty when none runs)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan (destination of every VM and why) and change nothing")
	f.IntVar(&o.retries, "retries", drain.DefaultRetries, "retries of a failed move")
	f.StringVar(&o.backoff, "backoff", drain.DefaultBackoff.String(), "wait before the first retry (doubled for each next one)")
	f.StringSliceVar(&o.to, "to", nil, "destinations to use, comma-separated inventory names (default: every other host)")
	f.StringArrayVar(&o.avoid, "avoid-label", nil, "never place on hosts with this label, key=value (repeatable)")
	f.StringArrayVar(&o.prefer, "prefer-label", nil, "prefer hosts with this label, key=value (repeatable)")
	f.StringVar(&o.reason, "reason", "", "why the host goes into maintenance (shown by 'ferry place' and 'ferry hosts')")
	f.BoolVar(&o.cancel, "cancel", false, "ask the drain of HOST running elsewhere to stop starting moves")
	f.BoolVar(&o.status, "status", false, "show the latest drain of HOST (running or finished) and exit")
	o.live.register(f, "live moves: ")
}

func (o *drainOptions) validate(cmd *cobra.Command) error {
	if !inventory.ValidName(o.host) {
		return usagef("host %q is not a valid inventory name (letters, digits, '.', '_', '-')", o.host)
	}
	if o.cancel || o.status {
		if o.cancel && o.status {
			return usagef("--cancel and --status do not go together")
		}
		var extra []string
		// VisitAll + Changed: the flag set LocalNonPersistentFlags builds
		// is a copy that never saw the parse, so its Visit sees nothing.
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Changed && f.Name != "cancel" && f.Name != "status" {
				extra = append(extra, "--"+f.Name)
			}
		})
		if len(extra) > 0 {
			return usagef("%s with --cancel/--status: those only configure a new drain", strings.Join(extra, ", "))
		}
		return nil
	}
	// 0 would mean "the default" to the library; on the command line the
	// default is already in the flag, so 0 is a mistake.
	if o.parallel < 1 {
		return usagef("--parallel %d: must be at least 1", o.parallel)
	}
	if o.maxPerTarget < 1 {
		return usagef("--max-per-target %d: must be at least 1", o.maxPerTarget)
	}
	backoff, err := parseDuration("--backoff", o.backoff, drain.RangeBackoff)
	if err != nil {
		return err
	}
	place, err := parseLabels(o.avoid, o.prefer)
	if err != nil {
		return err
	}
	live, err := o.live.parse()
	if err != nil {
		return err
	}
	o.req = drain.Request{Host: o.host, Parallel: o.parallel, MaxPerTarget: o.maxPerTarget, Order: o.order,
		RunningOnly: o.runningOnly, DryRun: o.dryRun, Retries: o.retries, Backoff: backoff, Targets: o.to,
		Place: place, Live: live.Live, BandwidthMiBps: live.BandwidthMiBps, Reason: o.reason}
	// The library's own checks, so that the CLI, the API and the library
	// say the same thing; a refusal here is bad input (exit 2).
	if err := drain.Validate(o.req); err != nil {
		return usageError{err}
	}
	return nil
}

func (o *drainOptions) run(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	out := cmd.OutOrStdout()
	// The first signal (cmd's context) stops new moves; a second one rolls
	// back the moves in flight.
	abort, rollBack := context.WithCancel(context.Background())
	defer rollBack()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				fmt.Fprintln(cmd.ErrOrStderr(), "\nferry: stopping: no new moves; moves in flight finish (Ctrl-C again rolls them back)")
				continue
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "\nferry: rolling back the moves in flight")
			rollBack()
			return
		}
	}()
	o.req.Abort = abort
	var pr *drainPrinter
	if !a.json() && !o.dryRun {
		pr = newDrainPrinter(out, isTerminal(out))
		o.req.Progress = pr.update
	}
	rep, err := drain.Drain(cmd.Context(), c, o.req)
	if pr != nil {
		pr.finish()
	}
	if rep == nil {
		return err
	}
	return report(out, a, rep, err, printDrainReport)
}

func (o *drainOptions) runCancel(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	rep, err := drain.Cancel(cmd.Context(), c.Journal, o.host)
	if err != nil {
		if errors.Is(err, drain.ErrUnknown) {
			return usagef("no drain of %s is running (ferry drain %s --status shows the last one)", o.host, o.host)
		}
		return err
	}
	out := cmd.OutOrStdout()
	if a.json() {
		return writeJSON(out, rep)
	}
	if rep.State != drain.StateRunning {
		printf(out, "drain %s of %s already ended (%s); nothing to cancel\n", short(rep.ID), rep.Host, rep.State)
		return nil
	}
	printf(out, "asked drain %s of %s to stop: no new moves start; %d move(s) in flight finish\n", short(rep.ID), rep.Host, countState(rep, drain.VMMoving))
	return nil
}

func (o *drainOptions) runStatus(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	rep, err := drain.Last(cmd.Context(), c.Journal, o.host)
	if errors.Is(err, drain.ErrUnknown) {
		return usagef("%s has never been drained", o.host)
	}
	if err != nil {
		return err
	}
	return report(cmd.OutOrStdout(), a, rep, nil, printDrainReport)
}

func countState(r *drain.Report, state string) int {
	n := 0
	for _, v := range r.VMs {
		if v.State == state {
			n++
		}
	}
	return n
}
