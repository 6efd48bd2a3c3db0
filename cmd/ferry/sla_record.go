package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/sla"
)

type slaRecordOptions struct {
	kind, host, vm, vmUUID string
	at, detail             string
	correlationID, payload string
	dedupKey               string
}

func newSLARecordCmd(a *app) *cobra.Command {
	o := &slaRecordOptions{}
	cmd := &cobra.Command{
		Use:   "record KIND --host H [--vm V]",
		Short: "Add one event to the SLA log by hand (source \"manual\")",
		Long: `Add one event to the SLA log, e.g. an outage an external monitor saw, or a correction
(the log is append-only: a correction is a new event). The event is validated first:
poller and Monitor_* kinds need --host, VM_* kinds a VM, Migration_* kinds a VM and
--correlation-id, Migration_Completed a payload with downtime_ms.

Kinds: PS_Timeout, PS_Unreachable, PS_Reachable, VM_Unreachable, VM_Failure,
VM_Reachable, VM_Stopped, VM_Started, Monitor_Blind, Monitor_Sight, Migration_Planned,
Migration_Switchover, Migration_Completed, Migration_Failed, Migration_RolledBack.

Recording the same event twice (same kind, host, VM and time, or the same --dedup-key)
stores it once.

` + timeHelp,
		Example: `  ferry sla record VM_Failure --host host1 --vm web-01 --at 2025-06-01T10:00:00Z --detail "guest kernel panic"
  ferry sla record VM_Reachable --host host1 --vm web-01 --at 2025-06-01T10:04:30Z
  ferry sla record PS_Unreachable --host host2 --at -5m
  ferry sla record Migration_Completed --host host2 --vm db-02 --correlation-id m-17 --payload '{"downtime_ms":120}'`,
		Args: oneArg("record takes exactly one event kind"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.kind = args[0]
			e, err := o.event(time.Now())
			if err != nil {
				return err
			}
			if err := e.Validate(); err != nil {
				return usageError{fmt.Errorf("invalid event: %w", err)}
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			n, err := log.Append(cmd.Context(), e)
			if err != nil {
				return slaInput(err)
			}
			out := cmd.OutOrStdout()
			if a.json() {
				return writeJSON(out, map[string]any{"inserted": n, "event": e})
			}
			if n == 0 {
				fmt.Fprintf(out, "already recorded: %s\n", eventLine(e))
				return nil
			}
			fmt.Fprintf(out, "recorded: %s\n", eventLine(e))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.host, "host", "", "host the event is about (inventory name)")
	f.StringVar(&o.vm, "vm", "", "VM name")
	f.StringVar(&o.vmUUID, "vm-uuid", "", "VM UUID")
	f.StringVar(&o.at, "at", "now", "when it was observed")
	f.StringVar(&o.detail, "detail", "", "free text")
	f.StringVar(&o.correlationID, "correlation-id", "", "migration id (Migration_* kinds)")
	f.StringVar(&o.payload, "payload", "", `JSON object, e.g. '{"downtime_ms":120}' or '{"postcopy":true}'`)
	f.StringVar(&o.dedupKey, "dedup-key", "", "identifies the event across re-deliveries (default: derived from kind, host, VM, time)")
	return cmd
}

func (o *slaRecordOptions) event(now time.Time) (sla.Event, error) {
	kind, err := parseKind(o.kind)
	if err != nil {
		return sla.Event{}, err
	}
	at, err := parseTimeFlag("at", o.at, now)
	if err != nil {
		return sla.Event{}, err
	}
	e := sla.Event{
		Kind: kind, Host: o.host, VMName: o.vm, VMUUID: o.vmUUID, Source: sla.SourceManual,
		ObservedAt: at.UTC(), Detail: o.detail, CorrelationID: o.correlationID, DedupKey: o.dedupKey,
	}
	if o.payload != "" {
		if !json.Valid([]byte(o.payload)) {
			return sla.Event{}, usagef("--payload %q is not JSON", o.payload)
		}
		e.Payload = json.RawMessage(o.payload)
	}
	return e, nil
}
