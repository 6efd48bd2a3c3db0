package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/units"
)

type vmsOptions struct{ hosts []string }

func newVMsCmd(a *app) *cobra.Command {
	o := &vmsOptions{}
	cmd := &cobra.Command{
		Use:   "vms",
		Short: "List the VMs of every inventory host (or --host)",
		Example: `  ferry vms
  ferry vms --host host1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			vms, failed, err := c.VMs(cmd.Context(), o.hosts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.json() {
				if err := writeJSON(out, vms); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tVM\tUUID\tSTATE\tMEMORY\tVCPUS\tPERSISTENT")
				for _, v := range vms {
					state := string(v.State)
					if v.Reason != "" {
						state += " (" + v.Reason + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\n", v.Host, v.Name, v.UUID, state, units.IEC(v.MemoryBytes), v.VCPUs, v.Persistent)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			for _, f := range failed {
				fmt.Fprintf(cmd.ErrOrStderr(), "ferry: host %s unreachable: %s\n", f.Name, f.Error)
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d host(s) unreachable; the list is incomplete", len(failed))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&o.hosts, "host", nil, "only these hosts (inventory names or URIs; repeatable)")
	return cmd
}
