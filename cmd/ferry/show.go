package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/units"
)

type showOptions struct {
	id  string
	xml bool
}

func newShowCmd(a *app) *cobra.Command {
	o := &showOptions{}
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one migration from the journal (an id prefix is enough)",
		Example: `  ferry show 3f2a9c1e
  ferry show 3f2a9c1e --xml > web-01.xml`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("show takes one migration id (see ferry history)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			j, err := a.journal(cmd.Context())
			if err != nil {
				return err
			}
			r, err := j.Get(cmd.Context(), o.id)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.xml {
				fmt.Fprint(out, r.VMXML)
				return nil
			}
			if a.json() {
				return writeJSON(out, r)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
			row("id", r.ID)
			row("kind", r.Kind)
			row("vm", fmt.Sprintf("%s %s", r.VM, r.VMUUID))
			row("from", fmt.Sprintf("%s %s", dash(r.Source), r.SourceURI))
			row("to", fmt.Sprintf("%s %s", dash(r.Dest), r.DestURI))
			row("state", r.State)
			row("started", r.StartedAt.Local().Format(time.RFC3339Nano))
			for i, t := range r.StageTimes {
				if t != nil {
					row(fmt.Sprintf("  stage %d %s", i, journal.Stage(i)), fmt.Sprintf("%s (+%s)", t.Local().Format("15:04:05.000"), dur(t.Sub(r.StartedAt))))
				}
			}
			if r.FinishedAt != nil {
				row("finished", fmt.Sprintf("%s (total %s)", r.FinishedAt.Local().Format(time.RFC3339Nano), dur(r.FinishedAt.Sub(r.StartedAt))))
			}
			if r.MemoryBytes > 0 {
				row("memory", units.IEC(r.MemoryBytes))
			}
			row("data sent", units.IEC(r.DataSent))
			row("iterations", fmt.Sprint(r.Iterations))
			if r.DowntimeMS != nil {
				row("downtime", fmt.Sprintf("%d ms (measured by libvirt)", *r.DowntimeMS))
			}
			if r.Options != "" {
				row("options", r.Options)
			}
			if r.Error != "" {
				row("error", r.Error)
			}
			if r.Notes != "" {
				row("notes", r.Notes)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&o.xml, "xml", false, "print the VM definition saved before the migration")
	return cmd
}
