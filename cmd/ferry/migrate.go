package main

import (
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
)

type migrateOptions struct {
	vm          string
	to, from    string
	live        liveFlags
	timeout     string
	copyStorage bool
	dryRun      bool
	plan        bool

	// cold path
	cold            bool
	toPool          string
	keepSource      bool
	start           bool
	shutdown        bool
	shutdownTimeout string
	force           bool
	changed         func(string) bool

	req orchestrator.Request
}

// migrateLong is the help of `ferry migrate`: the stages of a live move, the
// pre-copy control and the cold path.
const migrateLong = `Live-migrate a running VM to another host as a six-stage transaction:

  0 pre-migration   find the VM on its host, check it runs, snapshot its definition;
                    pre-migration hooks and webhooks may veto the move (exit 2)
  1 reservation     check the destination (reachable, distinct, no name/UUID clash,
                    CPU compatible, free memory after other migrations' reservations)
                    and reserve the VM's memory there
  2 pre-copy        QEMU copies memory while the VM runs; progress every 250 ms
  3 stop-and-copy   the source pauses for the final copy (the downtime)
  4 commitment      verify the VM runs on the destination, undefine the source copy
  5 activation      run hooks, release the reservation

Any failure before commitment (or Ctrl-C, or --timeout) aborts the copy and leaves the
VM running on the source. Every attempt, refused ones included, is in 'ferry history'.

Pre-copy control: before starting, ferry measures the guest's dirty rate and plans how
the copy converges (--plan shows it and stops). While it runs, a policy watches every
sample: when the remaining memory stops shrinking it raises the downtime limit step by
step up to --max-downtime-ceiling, throttles the guest (auto-converge, when planned),
switches to post-copy (--allow-postcopy), or pauses the guest for a final copy when the
predicted pause fits the ceiling. At --completion-timeout (default 150 s per GiB, at
least 120 s) it does what --on-timeout says: abort (the VM stays on the source),
postcopy, or pause (only within the ceiling, else abort). It never aborts once post-copy
has started: from then on the destination runs the guest and the source holds the pages
not yet sent. If the migration link breaks, QEMU pauses the guest on both hosts and ferry
reconnects them, retrying with backoff for --postcopy-resume-window (default 2m), then
exits 4 and 'ferry recover' resumes it. If the destination host or its QEMU dies during
post-copy, the guest is lost (its state is split between the hosts): use
--allow-postcopy only where that risk is acceptable.

Cold (--cold): move a shut-off VM's disks (with their backing chains), NVRAM, log files
and definition over libvirt storage streams, sparse where both libvirts allow it. Each
file's checksum is computed on the source and verified on the destination before the
source is touched; then the VM is defined on the destination, verified, undefined on the
source (with its NVRAM) and its files deleted (--keep-source keeps them). Any failure or
Ctrl-C before that removes what was copied and leaves the source as it was; 'ferry
recover' reverts or finishes an interrupted move, and running the same command again
resumes it, skipping files already copied and verified. A running VM is refused unless
--shutdown (guest shutdown, --shutdown-timeout, then --force destroys it).`

const migrateExample = `  ferry migrate web-01 --to host2
  ferry migrate web-01 --to qemu+tcp://10.0.0.12/system --from host1 --max-downtime 500ms
  ferry migrate db-02 --to host3 --bandwidth 200 --timeout 10m -o json
  ferry migrate web-01 --to host2 --dry-run
  ferry migrate busy-db --to host2 --bandwidth 40 --plan
  ferry migrate busy-db --to host2 --allow-postcopy --on-timeout postcopy
  ferry migrate db-02 --to host3 --cold --plan
  ferry migrate db-02 --to host3 --cold --to-pool fast --start
  ferry migrate web-01 --to host2 --cold --shutdown --shutdown-timeout 2m --force`

func newMigrateCmd(a *app) *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:     "migrate VM --to HOST",
		Short:   "Live-migrate a running VM to another host",
		Long:    migrateLong,
		Example: migrateExample,
		Args:    oneArg("migrate takes exactly one VM (name or UUID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.vm = args[0]
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			c.Log = c.Log.WithField("cmd", "migrate")
			o.changed = cmd.Flags().Changed
			if err := o.validate(); err != nil {
				kind := orchestrator.KindLive
				if o.cold {
					kind = orchestrator.KindCold
				}
				return c.Refuse(cmd.Context(), orchestrator.Request{Kind: kind, VM: o.vm, To: o.to, From: o.from}, err)
			}
			return o.run(cmd, a, c)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// addFlags registers the flags of `ferry migrate` on f.
func (o *migrateOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.to, "to", "", "destination host: inventory name or libvirt URI (required)")
	f.StringVar(&o.from, "from", "", "source host (default: the inventory host where the VM runs)")
	o.live.register(f, "")
	f.StringVar(&o.timeout, "timeout", "0", "abort and roll back after this long (0: never), e.g. 10m")
	f.BoolVar(&o.copyStorage, "copy-storage", false, "also copy the VM's non-shared disks (libvirt --copy-storage-all)")
	f.BoolVar(&o.dryRun, "dry-run", false, "run every pre-flight check and stop before changing anything")
	f.BoolVar(&o.plan, "plan", false, "run the checks, measure the guest, print the pre-copy plan and stop")
	f.BoolVar(&o.cold, "cold", false, "move a shut-off VM: disks, NVRAM, logs and definition (with --plan: show the artifacts and stop)")
	f.StringVar(&o.toPool, "to-pool", "", "--cold: destination storage pool for the disks (default: a pool named like the source disk's, else default)")
	f.BoolVar(&o.keepSource, "keep-source", false, "--cold: keep the source's files after the move (the source definition is still removed)")
	f.BoolVar(&o.start, "start", false, "--cold: start the VM on the destination afterwards")
	f.BoolVar(&o.shutdown, "shutdown", false, "--cold: shut a running VM down first (guest shutdown request)")
	f.StringVar(&o.shutdownTimeout, "shutdown-timeout", "60s", "--cold --shutdown: how long to wait for the guest to power off")
	f.BoolVar(&o.force, "force", false, "--cold --shutdown: destroy the VM if it is still running after --shutdown-timeout")
}

func (o *migrateOptions) validate() error {
	if o.to == "" {
		return usagef("--to is required: the destination host (inventory name or libvirt URI)")
	}
	if o.changed == nil {
		o.changed = func(string) bool { return false }
	}
	if o.cold {
		return o.validateCold()
	}
	for _, f := range []string{"to-pool", "keep-source", "start", "shutdown", "shutdown-timeout", "force"} {
		if o.changed(f) {
			return usagef("--%s is for cold moves: add --cold", f)
		}
	}
	req, err := o.live.parse()
	if err != nil {
		return err
	}
	to, err := parseDuration("--timeout", o.timeout, orchestrator.RangeTimeout)
	if err != nil {
		return err
	}
	req.VM, req.To, req.From, req.Live.Timeout = o.vm, o.to, o.from, to
	req.Live.CopyStorage, req.DryRun, req.PlanOnly = o.copyStorage, o.dryRun, o.plan
	o.req = req
	return nil
}

// parseDuration reads a duration flag ("0" is zero) and checks it against
// its range.
func parseDuration(flag, v string, rng orchestrator.DurationRange) (time.Duration, error) {
	if v == "0" {
		return 0, rangeErr(rng.Check(flag, 0))
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, usagef("%s %q: give a duration such as 300ms, 2s or 10m", flag, v)
	}
	if d < 0 {
		return 0, usagef("%s %q must not be negative", flag, v)
	}
	return d, rangeErr(rng.Check(flag, d))
}

// rangeErr marks a range error as bad input (exit 2).
func rangeErr(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// progressDisplay shows a move's progress as it goes, then its end:
// progressPrinter for a live move, coldPrinter for a cold one.
type progressDisplay interface {
	update(orchestrator.Progress)
	finish()
}

// run carries out the validated request and reports its result. Humans
// get a progress display while it runs; JSON output and --plan do not.
func (o *migrateOptions) run(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	out := cmd.OutOrStdout()
	printRes := printResult
	if o.cold {
		printRes = printColdResult
	}
	var disp progressDisplay
	if !a.json() && !o.plan {
		if o.cold {
			disp = newColdPrinter(out, isTerminal(out))
		} else {
			disp = newProgressPrinter(out, isTerminal(out))
		}
		o.req.Progress = disp.update
	}
	res, err := c.Migrate(cmd.Context(), o.req)
	if disp != nil {
		disp.finish()
	}
	return report(out, a, res, err, printRes)
}

func (o *migrateOptions) validateCold() error {
	for _, f := range []string{"max-downtime", "timeout", "copy-storage", "dry-run", "max-downtime-ceiling", "allow-postcopy", "completion-timeout", "on-timeout", "postcopy-resume-window"} {
		if o.changed(f) {
			return usagef("--%s is for live migration; a cold move takes --plan, --to-pool, --keep-source, --start, --shutdown, --shutdown-timeout, --force, --bandwidth", f)
		}
	}
	if (o.changed("shutdown-timeout") || o.force) && !o.shutdown {
		return usagef("--shutdown-timeout and --force go with --shutdown")
	}
	st, err := parseDuration("--shutdown-timeout", o.shutdownTimeout, orchestrator.RangeShutdownTimeout)
	if err != nil {
		return err
	}
	bw, err := parseBandwidth(o.live.bandwidth)
	if err != nil {
		return err
	}
	if o.toPool != "" && !inventory.ValidName(o.toPool) {
		return usagef("--to-pool %q is not a valid pool name", o.toPool)
	}
	o.req = orchestrator.Request{Kind: orchestrator.KindCold, VM: o.vm, To: o.to, From: o.from, PlanOnly: o.plan, BandwidthMiBps: bw,
		Cold: orchestrator.ColdOptions{ToPool: o.toPool, KeepSource: o.keepSource, Start: o.start, Shutdown: o.shutdown, ShutdownTimeout: st, Force: o.force}}
	return nil
}

// report writes a migration's result as JSON or for humans; err, the
// migration's own outcome, is what the command returns.
func report[R any](out io.Writer, a *app, res R, err error, print func(io.Writer, R)) error {
	if a.json() {
		if jerr := writeJSON(out, res); jerr != nil {
			return jerr
		}
		return err
	}
	print(out, res)
	return err
}

func parseBandwidth(v string) (uint64, error) {
	bw, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), "MiB/s"), 10, 64)
	if err != nil {
		return 0, usagef("--bandwidth %q: give a whole number of MiB/s, e.g. 100", v)
	}
	return bw, rangeErr(orchestrator.RangeBandwidthMiBps.CheckUint("--bandwidth", bw))
}
