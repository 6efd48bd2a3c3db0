package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/sla"
)

// SLAFeed is the EventSink that writes the controller's migration events into
// the SLA event log, with the migration id as correlation id, so that the
// SLA report knows which lifecycle events belong to a migration and charges
// its switchover pause (libvirt's measured downtime).
//
//	MigrationEvent.Kind  SLA kind              host         payload
//	planned              Migration_Planned     source       source, destination
//	switchover           Migration_Switchover  source       source, destination, postcopy
//	completed            Migration_Completed   destination  source, destination, downtime_ms, postcopy
//	failed               Migration_Failed      source       source, destination, postcopy
//	rolled_back          Migration_RolledBack  source       source, destination
//
// Each event's dedup key is "migration:<id>:<kind>", so a migration event
// delivered twice (a retry, a recovery) is stored once.
type SLAFeed struct {
	Log *sla.Log
}

var slaKinds = map[string]sla.Kind{
	"planned":     sla.MigrationPlanned,
	"switchover":  sla.MigrationSwitchover,
	"completed":   sla.MigrationCompleted,
	"failed":      sla.MigrationFailed,
	"rolled_back": sla.MigrationRolledBack,
}

// MigrationEvent implements EventSink.
func (f SLAFeed) MigrationEvent(ctx context.Context, ev MigrationEvent) error {
	e, err := SLAEvent(ev)
	if err != nil {
		return err
	}
	_, err = f.Log.Append(ctx, e)
	return err
}

// SLAEvent translates a migration event into its SLA log row.
func SLAEvent(ev MigrationEvent) (sla.Event, error) {
	kind, ok := slaKinds[ev.Kind]
	if !ok {
		return sla.Event{}, fmt.Errorf("sla feed: unknown migration event %q", ev.Kind)
	}
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	pl := map[string]any{"source": ev.Source, "destination": ev.Dest}
	if ev.Postcopy {
		pl["postcopy"] = true
	}
	host := ev.Source
	if kind == sla.MigrationCompleted {
		host = ev.Dest
		pl["downtime_ms"] = ev.Downtime.Milliseconds()
	}
	payload, err := json.Marshal(pl)
	if err != nil {
		return sla.Event{}, err
	}
	return sla.Event{
		DedupKey:      "migration:" + ev.MigrationID + ":" + ev.Kind,
		Kind:          kind,
		Host:          host,
		VMName:        ev.VM,
		VMUUID:        ev.VMUUID,
		Source:        sla.SourceOrchestrator,
		ObservedAt:    at,
		Detail:        ev.Detail,
		CorrelationID: ev.MigrationID,
		Payload:       payload,
	}, nil
}
