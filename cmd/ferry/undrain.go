package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
)

type undrainOptions struct {
	host string
}

func newUndrainCmd(a *app) *cobra.Command {
	o := &undrainOptions{}
	cmd := &cobra.Command{
		Use:   "undrain HOST",
		Short: "Take a host out of maintenance so placement and drains may use it again",
		Long: `Clear HOST's maintenance mark (set by 'ferry drain'). VMs are not moved back.
A host whose drain is still running is refused: cancel the drain first
('ferry drain HOST --cancel') and wait for it to end.`,
		Example: `  ferry undrain host1
  ferry undrain host1 -o json`,
		Args: oneArg("undrain takes exactly one host (its inventory name)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.host = args[0]
			if !inventory.ValidName(o.host) {
				return usagef("host %q is not a valid inventory name (letters, digits, '.', '_', '-')", o.host)
			}
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			return o.run(cmd, a, c)
		},
	}
	return cmd
}

func (o *undrainOptions) run(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	ctx := cmd.Context()
	h, err := c.Resolve(o.host)
	if err != nil {
		return err
	}
	if d, err := drain.Last(ctx, c.Journal, h.Name); err == nil && d.State == drain.StateRunning {
		return usagef("%s is being drained right now (drain %s); stop it first with 'ferry drain %s --cancel'", h.Name, short(d.ID), h.Name)
	} else if err != nil && !errors.Is(err, drain.ErrUnknown) {
		return err
	}
	was, err := c.Journal.ClearMaintenance(ctx, h.Name)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json() {
		return writeJSON(out, map[string]any{"host": h.Name, "was_in_maintenance": was, "in_maintenance": false})
	}
	if was {
		printf(out, "%s is back in service: placement and drains may use it again\n", h.Name)
	} else {
		printf(out, "%s was not in maintenance; nothing changed\n", h.Name)
	}
	return nil
}
