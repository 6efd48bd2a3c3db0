package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/units"
)

type hostsOptions struct{ names []string }

func newHostsCmd(a *app) *cobra.Command {
	o := &hostsOptions{}
	return &cobra.Command{
		Use:   "hosts [HOST...]",
		Short: "Show the inventory's hosts: reachability, free memory, VMs",
		Example: `  ferry hosts
  ferry hosts host2 -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			hosts, err := c.Hosts(cmd.Context(), o.names)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.json() {
				return writeJSON(out, hosts)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tURI\tREACHABLE\tMEMORY FREE/TOTAL\tRESERVED\tCPUS\tVMS RUNNING/DEFINED\tLIBVIRT\tQEMU\tMIGRATION TLS\tMAINTENANCE")
			down := 0
			for _, h := range hosts {
				if !h.Reachable {
					down++
					fmt.Fprintf(tw, "%s\t%s\tno: %s\t-\t-\t-\t-\t-\t-\t-\t%s\n", h.Name, h.URI, h.Error, maintText(h.Maintenance))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\tyes\t%s / %s\t%s\t%d\t%d/%d\t%s\t%s\t%s\t%s\n", h.Name, h.URI,
					units.IEC(h.FreeMemoryBytes), units.IEC(h.MemoryBytes), units.IEC(h.ReservedBytes), h.CPUs,
					h.VMsRunning, h.VMsDefined, h.LibvirtVersion, h.QEMUVersion, tlsText(h), maintText(h.Maintenance))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if down > 0 {
				return fmt.Errorf("%d of %d hosts unreachable", down, len(hosts))
			}
			return nil
		},
	}
}

func maintText(m *journal.MaintenanceMark) string {
	if m == nil {
		return "-"
	}
	return "yes (" + firstOf(m.Reason, "since "+m.Since.Local().Format("2006-01-02 15:04")) + ")"
}

// tlsText is a host's migration TLS column: its policy and what it offers.
func tlsText(h orchestrator.HostStatus) string {
	if h.TLSPolicy() == inventory.TLSOff {
		return "off"
	}
	offer := h.MigrationTLS
	if offer == "" {
		offer = "-"
	}
	return h.TLSPolicy() + ": " + offer
}
