package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/sla"
)

type slaReportOptions struct {
	q      sla.ReportQuery
	events bool
}

func newSLAReportCmd(a *app) *cobra.Command {
	o := &slaReportOptions{q: sla.DefaultReportQuery()}
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Availability per VM and per host over a period, with the intervals and events behind each figure",
		Long: `Correlate the SLA log into availability per VM and per host over [--from, --to)
(default: the last 30 days), against --target (default 99.95 %).

For each VM and host: availability = 1 - downtime / eligible; eligible time is the period
minus maintenance declared in advance and minus time the VM was stopped by its owner;
downtime is the union of the downtime intervals (VM failures until the VM is reachable
again, host outages the poller saw and nothing contradicted, failed post-copy migrations,
and each migration's switchover pause) minus excluded time. The error budget is
eligible x (100 - target) %. Every entry lists its intervals (start, end, class, rule,
cause, the ids of the events behind it) and those events, so each figure can be
rechecked: downtime is the total of the "charged" spans, which are the union of the
downtime intervals minus the excluded ones.

A host outage seen by the poller starts at PS_Unreachable; --backdate starts it at the
first PS_Timeout of its run instead. Both readings are always shown (downtime low/high).

-o table (or text) prints a table per entry, -o json the whole report with the events
(durations in nanoseconds, *_ns), -o csv one row per interval with the entry's figures.

` + timeHelp,
		Example: `  ferry sla report
  ferry sla report --vm web-01 --from -7d
  ferry sla report --host host1 --from 2025-06-01 --to 2025-07-01 --target 99.9
  ferry sla report --backdate -o csv > sla-june.csv
  ferry sla report --vm web-01 -o json`,
		Annotations: map[string]string{outputFormatsAnnotation: "text,table,json,csv"},
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			r, err := o.q.Run(cmd.Context(), log, time.Now())
			if err != nil {
				return reportQueryError(err)
			}
			var evs []sla.Event
			if o.events || a.opts.output == "json" {
				if evs, err = log.CitedEvents(cmd.Context(), r); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			switch a.opts.output {
			case "json":
				return writeJSON(out, struct {
					sla.Report
					Events []sla.Event `json:"events"`
				}{r, evs})
			case "csv":
				return writeReportCSV(out, r)
			}
			return writeReportTable(out, r, evs, o.events)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.q.VM, "vm", "", "only this VM (name or UUID)")
	f.StringVar(&o.q.Host, "host", "", "only this host and the VMs that ran on it")
	f.StringVar(&o.q.From, "from", o.q.From, "start of the period")
	f.StringVar(&o.q.To, "to", o.q.To, "end of the period (a report never counts time after now)")
	f.Float64Var(&o.q.Target, "target", o.q.Target, "availability target, percent")
	f.BoolVar(&o.q.Backdate, "backdate", false, "start poller-detected outages at the first PS_Timeout instead of PS_Unreachable")
	f.BoolVar(&o.q.ChargeMigrationPauses, "charge-migration-pauses", o.q.ChargeMigrationPauses, "count each migration's switchover pause as downtime")
	f.DurationVar(&o.q.PollInterval, "poll-interval", o.q.PollInterval, "the poller's interval (timeouts further than two intervals apart are separate runs)")
	f.BoolVar(&o.events, "events", true, "list the events behind the intervals (table output)")
	return cmd
}

// reportQueryError turns a bad query into a usage error (exit 2) naming the
// flag, and a VM or host the log does not know into one too.
func reportQueryError(err error) error {
	var qe *sla.QueryError
	switch {
	case errors.As(err, &qe):
		return usagef("--%s %s", strings.ReplaceAll(qe.Field, "_", "-"), qe.Msg)
	case errors.Is(err, sla.ErrNoEntry):
		return usageError{err}
	}
	return err
}

// longDur prints a duration with days for long ones and milliseconds for short ones.
func longDur(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	switch {
	case d < time.Minute:
		return neg + dur(d)
	case d < 24*time.Hour:
		return neg + d.Round(time.Millisecond).String()
	}
	days := d / (24 * time.Hour)
	rest := (d - days*24*time.Hour).Round(time.Second)
	if rest == 0 {
		return fmt.Sprintf("%s%dd", neg, days)
	}
	return fmt.Sprintf("%s%dd%s", neg, days, rest)
}

func idList(ids []int64) string {
	if len(ids) == 0 {
		return "-"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = "#" + strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

func writeReportTable(w io.Writer, r sla.Report, evs []sla.Event, withEvents bool) error {
	start := "PS_Unreachable"
	if r.Options.Backdate {
		start = "the first PS_Timeout (--backdate)"
	}
	pauses := "charged"
	if !r.Options.ChargeMigrationPause {
		pauses = "not charged"
	}
	fmt.Fprintf(w, "SLA report %s -> %s (%s counted), target %g %%\n", stamp(r.Period.From), stamp(r.End), longDur(r.End.Sub(r.Period.From)), r.Options.Target)
	fmt.Fprintf(w, "host outages start at %s; migration pauses %s\n", start, pauses)
	if len(r.VMs)+len(r.Hosts) == 0 {
		fmt.Fprintln(w, "\nno events in the log before the end of the period")
		return nil
	}
	for _, es := range [][]sla.Entry{r.VMs, r.Hosts} {
		for _, e := range es {
			writeEntry(w, e, evs, withEvents)
		}
	}
	return nil
}

// writeEntry prints one entry: its figures, its intervals and (withEvents)
// the events they cite, in the order they were observed (evs is sorted so).
func writeEntry(w io.Writer, e sla.Entry, evs []sla.Event, withEvents bool) {
	fmt.Fprintln(w)
	title := "VM " + e.Name
	if e.Scope == "host" {
		title = "host " + e.Name
	}
	if e.UUID != "" {
		title += " (" + e.UUID + ")"
	}
	if len(e.Hosts) > 0 {
		title += ", on " + strings.Join(e.Hosts, ", ")
	}
	if len(e.VMs) > 0 {
		title += ", VMs " + strings.Join(e.VMs, ", ")
	}
	met := "MET"
	if !e.Met {
		met = "MISSED"
	}
	fmt.Fprintln(w, title)
	fmt.Fprintf(w, "  availability  %.4f %%  (target %g %%: %s)\n", e.Availability, e.Target, met)
	fmt.Fprintf(w, "  downtime      %s  (outages from PS_Unreachable: %s, from the first PS_Timeout: %s)\n",
		longDur(e.Downtime), longDur(e.DowntimeLow), longDur(e.DowntimeHigh))
	fmt.Fprintf(w, "  eligible      %s  budget %s, used %s, left %s\n", longDur(e.Eligible), longDur(e.Budget), longDur(e.BudgetUsed), longDur(e.BudgetLeft))
	if len(e.Charged) > 0 {
		parts := make([]string, len(e.Charged))
		for i, s := range e.Charged {
			parts[i] = fmt.Sprintf("%s -> %s (%s)", stamp(s.Start), stamp(s.End), longDur(s.Duration()))
		}
		fmt.Fprintf(w, "  charged       %s\n", strings.Join(parts, "; "))
	}
	if len(e.Intervals) == 0 {
		fmt.Fprintln(w, "  no intervals: available all along")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  START\tEND\tDURATION\tCLASS\tRULE\tHOST\tEVENTS\tCAUSE")
	var ids []int64
	for _, iv := range e.Intervals {
		end := stamp(iv.End)
		if iv.Open {
			end += " (open)"
		}
		cause := iv.Cause
		if iv.Rule == sla.RuleHostUnreachable || iv.Rule == sla.RulePartition {
			cause += fmt.Sprintf(" [PS_Unreachable %s, first PS_Timeout %s]", stamp(iv.Unreachable), stamp(iv.FirstTimeout))
		}
		if iv.MaintenanceID != 0 {
			cause += fmt.Sprintf(" [maintenance %d]", iv.MaintenanceID)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", stamp(iv.Start), end, longDur(iv.Duration()), iv.Class, iv.Rule,
			dash(iv.Host), truncate(idList(iv.EventIDs), 40), cause)
		ids = append(ids, iv.EventIDs...)
	}
	_ = tw.Flush()
	if !withEvents || len(ids) == 0 {
		return
	}
	fmt.Fprintln(w, "  events")
	cited := make(map[int64]bool, len(ids))
	for _, id := range ids {
		cited[id] = true
	}
	for _, ev := range evs {
		if cited[ev.ID] {
			fmt.Fprintf(w, "    %-6s %s\n", "#"+strconv.FormatInt(ev.ID, 10), eventLine(ev))
		}
	}
}

func writeReportCSV(w io.Writer, r sla.Report) error {
	cw := csv.NewWriter(w)
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }
	_ = cw.Write([]string{"scope", "name", "uuid", "hosts", "availability_pct", "target_pct", "met",
		"eligible_s", "downtime_s", "downtime_low_s", "downtime_high_s", "budget_s", "budget_left_s",
		"interval_start", "interval_end", "interval_s", "class", "rule", "host", "correlation_id", "open", "event_ids", "cause"})
	for _, es := range [][]sla.Entry{r.VMs, r.Hosts} {
		for _, e := range es {
			head := []string{e.Scope, e.Name, e.UUID, strings.Join(append(append([]string{}, e.Hosts...), e.VMs...), " "),
				strconv.FormatFloat(e.Availability, 'f', 6, 64), strconv.FormatFloat(e.Target, 'f', -1, 64), strconv.FormatBool(e.Met),
				secs(e.Eligible), secs(e.Downtime), secs(e.DowntimeLow), secs(e.DowntimeHigh), secs(e.Budget), secs(e.BudgetLeft)}
			if len(e.Intervals) == 0 {
				_ = cw.Write(append(head, make([]string, 10)...))
				continue
			}
			for _, iv := range e.Intervals {
				ids := make([]string, len(iv.EventIDs))
				for i, id := range iv.EventIDs {
					ids[i] = strconv.FormatInt(id, 10)
				}
				_ = cw.Write(append(head, iv.Start.UTC().Format(time.RFC3339Nano), iv.End.UTC().Format(time.RFC3339Nano),
					secs(iv.Duration()), string(iv.Class), string(iv.Rule), iv.Host, iv.CorrelationID,
					strconv.FormatBool(iv.Open), strings.Join(ids, " "), iv.Cause))
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
