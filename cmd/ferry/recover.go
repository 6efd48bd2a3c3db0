package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/orchestrator"
)

type recoverOptions struct {
	force bool
}

func newRecoverCmd(a *app) *cobra.Command {
	o := &recoverOptions{}
	cmd := &cobra.Command{
		Use:   "recover [ID]",
		Short: "Finish migrations a crash interrupted: exactly one running copy of each VM",
		Long: `Recover reads the journal's unfinished migrations (their ferry process is gone),
asks both hosts where the VM actually is, aborts a migration job left running,
and converges to exactly one running copy: the source if the migration had not
taken over, the destination if it had. Each row ends completed or rolled_back.
Running it again is harmless.`,
		Example: `  ferry recover
  ferry recover 3f2a9c1e --force`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			opt := orchestrator.RecoverOptions{Force: o.force}
			if len(args) == 1 {
				opt.ID = args[0]
			}
			res, rerr := c.Recover(cmd.Context(), opt)
			out := cmd.OutOrStdout()
			if a.json() {
				if res == nil {
					res = []orchestrator.RecoverResult{}
				}
				if err := writeJSON(out, res); err != nil {
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
		},
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "also take over migrations whose ferry process still runs")
	return cmd
}
