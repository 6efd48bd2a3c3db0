package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/sla"
)

func newSLAMaintenanceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maintenance",
		Short: "Declare, list and remove maintenance windows (excluded from SLA time when declared in advance)",
		Long: `A maintenance window of a host covers every VM on the host during the window; a window
of a VM covers that VM. A window declared before it starts is excluded from both
downtime and eligible time; one declared after its start is listed in reports
(maintenance-late) and excluded from nothing.

` + timeHelp,
		Example: `  ferry sla maintenance add --host host1 --from 2025-06-01T22:00:00Z --to 2025-06-01T23:30:00Z --reason "BIOS update"
  ferry sla maintenance add --vm db-02 --from +1h --to +2h --reason "schema migration"
  ferry sla maintenance list --from -30d
  ferry sla maintenance remove 3`,
		Args: subcommandOnly,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSLAMaintenanceAddCmd(a), newSLAMaintenanceListCmd(a), newSLAMaintenanceRemoveCmd(a))
	return cmd
}

type maintenanceAddOptions struct {
	host, vm, from, to, reason string
}

func newSLAMaintenanceAddCmd(a *app) *cobra.Command {
	o := &maintenanceAddOptions{}
	cmd := &cobra.Command{
		Use:   "add --host H|--vm V --from T --to T --reason R",
		Short: "Declare a maintenance window (now: declared-at is the current time)",
		Example: `  ferry sla maintenance add --host host1 --from 2025-06-01T22:00:00Z --to 2025-06-01T23:30:00Z --reason "BIOS update"
  ferry sla maintenance add --vm web-01 --from +10m --to +40m --reason "guest upgrade"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			m, err := o.window(now)
			if err != nil {
				return err
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			id, err := log.AddMaintenance(cmd.Context(), m)
			if err != nil {
				if errors.Is(err, sla.ErrInvalidEvent) {
					return usageError{err}
				}
				return err
			}
			m.ID, m.DeclaredAt = id, now.UTC()
			out := cmd.OutOrStdout()
			if a.json() {
				return writeJSON(out, m)
			}
			fmt.Fprintf(out, "maintenance %d: %s %s -> %s (%s)\n", id, maintenanceScope(m), stamp(m.From), stamp(m.To), m.Reason)
			if !m.InAdvance() {
				fmt.Fprintf(out, "note: the window started before it was declared; reports list it but do not exclude it\n")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.host, "host", "", "host under maintenance (covers the VMs on it)")
	f.StringVar(&o.vm, "vm", "", "VM under maintenance (name or UUID)")
	f.StringVar(&o.from, "from", "", "start of the window (required)")
	f.StringVar(&o.to, "to", "", "end of the window (required)")
	f.StringVar(&o.reason, "reason", "", "why (required)")
	return cmd
}

func (o *maintenanceAddOptions) window(now time.Time) (sla.Maintenance, error) {
	switch {
	case o.host == "" && o.vm == "":
		return sla.Maintenance{}, usagef("give --host or --vm")
	case o.host != "" && o.vm != "":
		return sla.Maintenance{}, usagef("give --host or --vm, not both")
	case o.from == "" || o.to == "":
		return sla.Maintenance{}, usagef("--from and --to are required")
	case o.reason == "":
		return sla.Maintenance{}, usagef("--reason is required: say why, reports show it")
	}
	from, err := parseTimeFlag("from", o.from, now)
	if err != nil {
		return sla.Maintenance{}, err
	}
	to, err := parseTimeFlag("to", o.to, now)
	if err != nil {
		return sla.Maintenance{}, err
	}
	if !to.After(from) {
		return sla.Maintenance{}, usagef("--to %s is not after --from %s", stamp(to), stamp(from))
	}
	return sla.Maintenance{Host: o.host, VM: o.vm, From: from.UTC(), To: to.UTC(), Reason: o.reason, DeclaredAt: now.UTC()}, nil
}

func maintenanceScope(m sla.Maintenance) string {
	if m.Host != "" {
		return "host " + m.Host
	}
	return "vm " + m.VM
}

func newSLAMaintenanceListCmd(a *app) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List maintenance windows overlapping a period (default: all)",
		Example: `  ferry sla maintenance list
  ferry sla maintenance list --from -30d -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, t, err := parsePeriod(from, to, time.Now())
			if err != nil {
				return err
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			ms, err := log.ListMaintenance(cmd.Context(), f, t)
			if err != nil {
				return err
			}
			return writeList(cmd.OutOrStdout(), a, ms, "ID\tSCOPE\tFROM\tTO\tDURATION\tDECLARED\tIN ADVANCE\tREASON", maintenanceRow)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "only windows ending after this time")
	cmd.Flags().StringVar(&to, "to", "", "only windows starting before this time")
	return cmd
}

// maintenanceRow is one window in the `ferry sla maintenance list` table.
func maintenanceRow(w io.Writer, m sla.Maintenance) {
	adv := "yes"
	if !m.InAdvance() {
		adv = "no: not excluded"
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, maintenanceScope(m), stamp(m.From), stamp(m.To),
		m.To.Sub(m.From), stamp(m.DeclaredAt), adv, m.Reason)
}

func newSLAMaintenanceRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a maintenance window (the time it covered counts again)",
		Example: `  ferry sla maintenance remove 3`,
		Args:    oneArg("remove takes exactly one window id (see 'ferry sla maintenance list')"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return usagef("%q is not a maintenance window id (a positive number)", args[0])
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			if err := log.RemoveMaintenance(cmd.Context(), id); err != nil {
				if errors.Is(err, sla.ErrNotFound) {
					return usagef("no maintenance window %d", id)
				}
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"removed": id})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed maintenance window %d\n", id)
			return nil
		},
	}
}
