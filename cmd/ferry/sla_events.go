package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

type slaEventsOptions struct {
	vm, host      string
	kinds         []string
	from, to      string
	correlationID string
	limit         int
}

func newSLAEventsCmd(a *app) *cobra.Command {
	o := &slaEventsOptions{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List SLA events from the log, oldest first (the newest --limit of them)",
		Long: `List the SLA events matching the filters in the order they were observed. With
--limit N (default 100; 0 for all) the newest N matching events are shown.

` + timeHelp,
		Example: `  ferry sla events
  ferry sla events --vm web-01 --from -7d
  ferry sla events --host host1 --kind PS_Timeout,PS_Unreachable,PS_Reachable
  ferry sla events --kind Migration_Completed --limit 0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.filter(time.Now())
			if err != nil {
				return err
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			evs, err := log.Query(cmd.Context(), f)
			if err != nil {
				return err
			}
			return writeList(cmd.OutOrStdout(), a, evs, "ID\tOBSERVED\tKIND\tHOST\tVM\tSOURCE\tMIGRATION\tPAYLOAD\tDETAIL", eventRow)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.vm, "vm", "", "only events of this VM (name or UUID)")
	fl.StringVar(&o.host, "host", "", "only events about this host")
	fl.StringSliceVar(&o.kinds, "kind", nil, "only these kinds (comma-separated or repeated)")
	fl.StringVar(&o.from, "from", "", "only events observed at or after this time")
	fl.StringVar(&o.to, "to", "", "only events observed before this time")
	fl.StringVar(&o.correlationID, "migration", "", "only events of this migration id")
	fl.IntVar(&o.limit, "limit", 100, "show the newest N matching events (0: all)")
	return cmd
}

func (o *slaEventsOptions) filter(now time.Time) (sla.Filter, error) {
	f := sla.Filter{VM: o.vm, Host: o.host, CorrelationID: o.correlationID, Limit: o.limit, Newest: true}
	if err := orchestrator.RangeListLimit.Check("--limit", int64(o.limit)); err != nil {
		return f, usageError{err}
	}
	for _, k := range o.kinds {
		kind, err := parseKind(k)
		if err != nil {
			return f, err
		}
		f.Kinds = append(f.Kinds, kind)
	}
	var err error
	if f.From, f.To, err = parsePeriod(o.from, o.to, now); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From) {
		return f, usagef("--to %s is not after --from %s", stamp(f.To), stamp(f.From))
	}
	return f, nil
}

// eventRow is one event in the `ferry sla events` table.
func eventRow(w io.Writer, e sla.Event) {
	vm := e.VMName
	if vm == "" {
		vm = e.VMUUID
	}
	pl := "-"
	if len(e.Payload) > 0 {
		pl = compactJSON(e.Payload)
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, stamp(e.ObservedAt), e.Kind, dash(e.Host), dash(vm),
		e.Source, dash(short(e.CorrelationID)), pl, truncate(e.Detail, 70))
}

// short abbreviates a UUID-like id to its first 8 characters.
func short(id string) string {
	if len(id) == 36 && strings.Count(id, "-") == 4 {
		return id[:8]
	}
	return id
}
