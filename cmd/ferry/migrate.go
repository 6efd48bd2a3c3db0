package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/orchestrator"
)

type migrateOptions struct {
	vm          string
	to, from    string
	maxDowntime string
	bandwidth   string
	timeout     string
	copyStorage bool
	dryRun      bool

	req orchestrator.Request
}

func newMigrateCmd(a *app) *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:   "migrate VM --to HOST",
		Short: "Live-migrate a running VM to another host",
		Long: `Live-migrate a running VM to another host as a six-stage transaction:

  0 pre-migration   find the VM on its host, check it runs, snapshot its definition
  1 reservation     check the destination (reachable, distinct, no name/UUID clash,
                    CPU compatible, free memory after other migrations' reservations)
                    and reserve the VM's memory there
  2 pre-copy        QEMU copies memory while the VM runs; progress every 250 ms
  3 stop-and-copy   the source pauses for the final copy (the downtime)
  4 commitment      verify the VM runs on the destination, undefine the source copy
  5 activation      run hooks, release the reservation

Any failure before commitment (or Ctrl-C, or --timeout) aborts the copy and leaves the
VM running on the source. Every attempt, refused ones included, is in 'ferry history'.`,
		Example: `  ferry migrate web-01 --to host2
  ferry migrate web-01 --to qemu+tcp://10.0.0.12/system --from host1 --max-downtime 500ms
  ferry migrate db-02 --to host3 --bandwidth 200 --timeout 10m -o json
  ferry migrate web-01 --to host2 --dry-run`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("migrate takes exactly one VM (name or UUID), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.vm = args[0]
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			c.Log = c.Log.WithField("cmd", "migrate")
			if err := o.validate(); err != nil {
				return c.Refuse(cmd.Context(), orchestrator.Request{VM: o.vm, To: o.to, From: o.from}, err)
			}
			return o.run(cmd, a, c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "destination host: inventory name or libvirt URI (required)")
	f.StringVar(&o.from, "from", "", "source host (default: the inventory host where the VM runs)")
	f.StringVar(&o.maxDowntime, "max-downtime", "300ms", "longest pause allowed at switchover")
	f.StringVar(&o.bandwidth, "bandwidth", "0", "bandwidth cap in MiB/s (0: unlimited)")
	f.StringVar(&o.timeout, "timeout", "0", "abort and roll back after this long (0: never), e.g. 10m")
	f.BoolVar(&o.copyStorage, "copy-storage", false, "also copy the VM's non-shared disks (libvirt --copy-storage-all)")
	f.BoolVar(&o.dryRun, "dry-run", false, "run every pre-flight check and stop before changing anything")
	return cmd
}

func (o *migrateOptions) validate() error {
	if o.to == "" {
		return usagef("--to is required: the destination host (inventory name or libvirt URI)")
	}
	md, err := parseDuration("--max-downtime", o.maxDowntime)
	if err != nil {
		return err
	}
	if md <= 0 {
		return usagef("--max-downtime must be more than 0, got %q", o.maxDowntime)
	}
	to, err := parseDuration("--timeout", o.timeout)
	if err != nil {
		return err
	}
	bw, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(o.bandwidth), "MiB/s"), 10, 64)
	if err != nil {
		return usagef("--bandwidth %q: give a whole number of MiB/s, e.g. 100", o.bandwidth)
	}
	o.req = orchestrator.Request{VM: o.vm, To: o.to, From: o.from, MaxDowntime: md, Timeout: to,
		BandwidthMiBps: bw, CopyStorage: o.copyStorage, DryRun: o.dryRun}
	return nil
}

func parseDuration(flag, v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, usagef("%s %q: give a duration such as 300ms, 2s or 10m", flag, v)
	}
	if d < 0 {
		return 0, usagef("%s %q must not be negative", flag, v)
	}
	return d, nil
}

func (o *migrateOptions) run(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	out := cmd.OutOrStdout()
	var pr *progressPrinter
	if !a.json() {
		pr = newProgressPrinter(out, isTerminal(out))
		o.req.Progress = pr.update
	}
	res, err := c.Migrate(cmd.Context(), o.req)
	if pr != nil {
		pr.finish()
	}
	if a.json() {
		if jerr := writeJSON(out, res); jerr != nil {
			return jerr
		}
		return err
	}
	printResult(out, res)
	return err
}

func printResult(w io.Writer, r *orchestrator.Result) {
	if r == nil {
		return
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
	case orchestrator.StateCompleted:
		fmt.Fprintf(w, "migrated %s: %s -> %s\n", r.VM, r.Source, r.Dest)
		fmt.Fprintf(w, "  total time    %s (migration %s)\n", dur(time.Duration(r.TotalMS)*time.Millisecond), dur(time.Duration(r.MigrationMS)*time.Millisecond))
		fmt.Fprintf(w, "  downtime      %s\n", dur(r.Downtime))
		fmt.Fprintf(w, "  data sent     %s of %s memory\n", bytesIEC(r.DataSent), bytesIEC(r.MemoryBytes))
		fmt.Fprintf(w, "  iterations    %d\n", r.Iterations)
		fmt.Fprintf(w, "  migration id  %s\n", r.ID)
		for _, h := range r.HookErrors {
			fmt.Fprintf(w, "  warning       %s\n", h)
		}
	case orchestrator.StateRolledBack:
		fmt.Fprintf(w, "rolled back: %s keeps running on %s (migration id %s)\n", r.VM, r.Source, r.ID)
	case orchestrator.StateFailed:
		fmt.Fprintf(w, "migration %s of %s needs recovery: run `ferry recover`\n", r.ID, r.VM)
	}
}
