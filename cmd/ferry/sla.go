package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/sla"
)

// timeHelp documents the time formats every sla command accepts.
const timeHelp = `Times (--from, --to, --at) are RFC 3339 (2025-06-01T12:00:00Z, any zone, optional
fraction), a local date or time (2025-06-01, 2025-06-01T12:00:00), "now", or relative to
now: -24h, -30d, -1d12h, +15m (d = 24 h; otherwise Go durations).`

func newSLACmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sla",
		Short: "SLA monitors, event log, maintenance windows and availability reports",
		Long: `Availability accounting against a 99.95 % target (21.6 min per 30 days).

'ferry sla monitor' runs the polling agent (is each host's libvirtd answering?) and the
monitoring agent (libvirt lifecycle events: crashes, stops, reconnects) and writes their
events to the SLA log in the state database. 'ferry migrate' writes each migration's
events (planned, switchover, completed with libvirt's measured downtime, failed, rolled
back) to the same log. 'ferry sla record' and 'ferry sla import' add events from
elsewhere. 'ferry sla report' correlates the log into availability per VM and per host,
listing the intervals and events behind every figure.

` + timeHelp,
		Example: `  ferry sla monitor --poll-interval 20s
  ferry sla report --vm web-01 --from -30d
  ferry sla events --host host1 --kind PS_Unreachable
  ferry sla maintenance add --host host1 --from 2025-06-01T22:00:00Z --to 2025-06-01T23:00:00Z --reason "kernel update"`,
		Args: subcommandOnly,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSLAMonitorCmd(a), newSLARecordCmd(a), newSLAImportCmd(a), newSLAReportCmd(a),
		newSLAEventsCmd(a), newSLAMaintenanceCmd(a))
	return cmd
}

// subcommandOnly rejects arguments to a command that only groups subcommands.
func subcommandOnly(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q; see '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return nil
}

// slaLog opens the state database and the SLA tables in it.
func (a *app) slaLog(ctx context.Context) (*sla.Log, error) {
	j, err := a.journal(ctx)
	if err != nil {
		return nil, err
	}
	return sla.NewLog(ctx, j.DB())
}

// parseTimeFlag reads a time flag; a bad value is a usage error.
func parseTimeFlag(flag, value string, now time.Time) (time.Time, error) {
	t, err := sla.ParseTime(value, now)
	if err != nil {
		return time.Time{}, usagef("--%s: %v", flag, err)
	}
	return t, nil
}

// parsePeriod reads the optional --from and --to bounds of a query; an
// empty one is the zero time: no bound on that side.
func parsePeriod(from, to string, now time.Time) (f, t time.Time, err error) {
	if from != "" {
		if f, err = parseTimeFlag("from", from, now); err != nil {
			return f, t, err
		}
	}
	if to != "" {
		if t, err = parseTimeFlag("to", to, now); err != nil {
			return f, t, err
		}
	}
	return f, t, nil
}

// parseKind accepts an event kind in any letter case.
func parseKind(s string) (sla.Kind, error) {
	for _, k := range sla.Kinds() {
		if strings.EqualFold(string(k), strings.TrimSpace(s)) {
			return k, nil
		}
	}
	names := make([]string, 0, len(sla.Kinds()))
	for _, k := range sla.Kinds() {
		names = append(names, string(k))
	}
	return "", usagef("unknown event kind %q; kinds: %s", s, strings.Join(names, ", "))
}

// slaInput turns the log's validation errors into usage errors (exit 2).
func slaInput(err error) error {
	if err != nil && errors.Is(err, sla.ErrInvalidEvent) {
		return usageError{err}
	}
	return err
}

// stamp prints a time the way the SLA commands show them: UTC, milliseconds.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// eventLine is one event as a plain line (monitor output, events table rows).
func eventLine(e sla.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-20s", stamp(e.ObservedAt), e.Kind)
	if e.Host != "" {
		fmt.Fprintf(&b, "  host=%s", e.Host)
	}
	if e.VMName != "" {
		fmt.Fprintf(&b, "  vm=%s", e.VMName)
	} else if e.VMUUID != "" {
		fmt.Fprintf(&b, "  vm=%s", e.VMUUID)
	}
	fmt.Fprintf(&b, "  source=%s", e.Source)
	if e.CorrelationID != "" {
		fmt.Fprintf(&b, "  migration=%s", e.CorrelationID)
	}
	if len(e.Payload) > 0 {
		fmt.Fprintf(&b, "  payload=%s", compactJSON(e.Payload))
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, "  %q", e.Detail)
	}
	return b.String()
}

func compactJSON(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
