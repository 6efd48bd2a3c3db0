package sla

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Kind is the type of an SLA event.
type Kind string

// Event kinds. See the package documentation for who emits each one and how
// the correlation rules read it.
const (
	// Polling agent, per host.
	PSTimeout     Kind = "PS_Timeout"
	PSUnreachable Kind = "PS_Unreachable"
	PSReachable   Kind = "PS_Reachable"

	// Monitoring agent (libvirt lifecycle events, connection close/keepalive).
	VMUnreachable Kind = "VM_Unreachable"
	VMFailure     Kind = "VM_Failure"
	VMReachable   Kind = "VM_Reachable"
	VMStopped     Kind = "VM_Stopped"
	VMStarted     Kind = "VM_Started"
	MonitorBlind  Kind = "Monitor_Blind"
	MonitorSight  Kind = "Monitor_Sight"

	// Orchestrator.
	MigrationPlanned    Kind = "Migration_Planned"
	MigrationSwitchover Kind = "Migration_Switchover"
	MigrationCompleted  Kind = "Migration_Completed"
	MigrationFailed     Kind = "Migration_Failed"
	MigrationRolledBack Kind = "Migration_RolledBack"
)

// kindOrder lists every kind. Its index is the tie-break rank when two events
// carry the same ObservedAt, so that the order events were delivered in never
// changes a result.
var kindOrder = []Kind{
	MigrationPlanned, MigrationSwitchover,
	PSTimeout, PSUnreachable,
	MonitorBlind, VMUnreachable, VMFailure, VMStopped,
	MigrationFailed, MigrationRolledBack, MigrationCompleted,
	VMStarted, VMReachable, MonitorSight, PSReachable,
}

var kindRank = func() map[Kind]int {
	m := make(map[Kind]int, len(kindOrder))
	for i, k := range kindOrder {
		m[k] = i
	}
	return m
}()

// Kinds returns every known event kind.
func Kinds() []Kind { return append([]Kind(nil), kindOrder...) }

// Known reports whether k is one of the kinds above.
func (k Kind) Known() bool { _, ok := kindRank[k]; return ok }

func (k Kind) isPoller() bool      { return k == PSTimeout || k == PSUnreachable || k == PSReachable }
func (k Kind) isMonitor() bool     { return k == MonitorBlind || k == MonitorSight }
func (k Kind) isMigration() bool   { return strings.HasPrefix(string(k), "Migration_") }
func (k Kind) isVMLifecycle() bool { return strings.HasPrefix(string(k), "VM_") }

// Sources of events.
const (
	SourcePoller       = "poller"
	SourceLibvirt      = "libvirt-events"
	SourceOrchestrator = "ferry-orchestrator"
	SourceManual       = "manual"
	// SourceImportPrefix prefixes the source of imported events: "import:<name>".
	SourceImportPrefix = "import:"
)

// ValidSource reports whether s is one of the sources above (an import source
// must name what it imported from).
func ValidSource(s string) bool {
	switch s {
	case SourcePoller, SourceLibvirt, SourceOrchestrator, SourceManual:
		return true
	}
	return strings.HasPrefix(s, SourceImportPrefix) && len(s) > len(SourceImportPrefix) &&
		strings.TrimSpace(s[len(SourceImportPrefix):]) != ""
}

// Event is one row of the append-only SLA event log. A correction is a new
// event, never an update.
type Event struct {
	// ID is assigned by the log; zero until stored.
	ID int64 `json:"id,omitempty"`
	// DedupKey identifies the event across re-deliveries: appending a key that
	// is already stored is a no-op. Empty means DefaultDedupKey.
	DedupKey string `json:"dedup_key,omitempty"`
	Kind     Kind   `json:"kind"`
	Host     string `json:"host,omitempty"`
	VMName   string `json:"vm,omitempty"`
	VMUUID   string `json:"vm_uuid,omitempty"`
	// Source is the monitor that produced the event (Source* constants).
	Source string `json:"source"`
	// ObservedAt is when the monitor saw what the event says; every rule uses it.
	ObservedAt time.Time `json:"observed_at"`
	// ReceivedAt is when the log stored it (set by Append when zero).
	ReceivedAt time.Time `json:"received_at,omitzero"`
	Detail     string    `json:"detail,omitempty"`
	// CorrelationID ties events to a migration (the migration id).
	CorrelationID string `json:"correlation_id,omitempty"`
	// Payload holds kind-specific data as a JSON object, e.g.
	// {"downtime_ms": 41} for Migration_Completed, {"postcopy": true}.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// ErrInvalidEvent is wrapped by every validation error.
var ErrInvalidEvent = errors.New("invalid SLA event")

// FieldError names the field of an event (or maintenance window) that is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap lets errors.Is(err, ErrInvalidEvent) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidEvent }

// Payload is the decoded form of the payload fields the rules read.
type Payload struct {
	// DowntimeMS is the switchover pause libvirt measured (Migration_Completed).
	DowntimeMS *int64 `json:"downtime_ms,omitempty"`
	// Postcopy marks a post-copy migration (Migration_Switchover,
	// Migration_Failed) or a failure during post-copy (VM_Failure).
	Postcopy bool `json:"postcopy,omitempty"`
	// Consecutive is the number of the PS_Timeout in its run of failed polls
	// (the poller writes it): 1 starts a new run even if an earlier timeout
	// is less than two poll intervals before it, since a poll between them
	// succeeded.
	Consecutive int `json:"consecutive,omitempty"`
	// Source and Destination hosts of a migration. On Migration_Completed,
	// Destination (or else the event's Host) is where the VM runs afterwards.
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
}

// DecodePayload decodes the fields of the payload that the rules read; unknown
// fields are ignored. An empty payload decodes to the zero Payload.
func (e *Event) DecodePayload() (Payload, error) {
	var p Payload
	if len(bytes.TrimSpace(e.Payload)) == 0 {
		return p, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(e.Payload, &raw); err != nil {
		return p, fmt.Errorf("not a JSON object: %w", err)
	}
	if raw == nil {
		return p, errors.New("not a JSON object")
	}
	if v, ok := raw["downtime_ms"]; ok {
		var ms json.Number
		if err := json.Unmarshal(v, &ms); err != nil || bytes.HasPrefix(bytes.TrimSpace(v), []byte(`"`)) {
			return p, fmt.Errorf("downtime_ms: want a number of milliseconds, got %s", v)
		}
		n, err := strconv.ParseInt(ms.String(), 10, 64)
		if err != nil {
			return p, fmt.Errorf("downtime_ms: want a whole number of milliseconds, got %s", ms)
		}
		if n < 0 {
			return p, fmt.Errorf("downtime_ms: must not be negative, got %d", n)
		}
		p.DowntimeMS = &n
	}
	if v, ok := raw["postcopy"]; ok {
		if err := json.Unmarshal(v, &p.Postcopy); err != nil {
			return p, fmt.Errorf("postcopy: want true or false, got %s", v)
		}
	}
	if v, ok := raw["consecutive"]; ok {
		if err := json.Unmarshal(v, &p.Consecutive); err != nil || p.Consecutive < 0 {
			return p, fmt.Errorf("consecutive: want a positive whole number, got %s", v)
		}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"source", &p.Source}, {"destination", &p.Destination}} {
		if v, ok := raw[f.name]; ok {
			if err := json.Unmarshal(v, f.dst); err != nil {
				return p, fmt.Errorf("%s: want a host name, got %s", f.name, v)
			}
		}
	}
	return p, nil
}

// Validate checks the event and returns every problem found, each a
// *FieldError naming the field (errors.Is(err, ErrInvalidEvent) holds).
func (e *Event) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	switch {
	case e.Kind == "":
		bad("kind", "required")
	case !e.Kind.Known():
		bad("kind", "unknown event kind %q", e.Kind)
	}
	if e.ObservedAt.IsZero() {
		bad("observed_at", "required")
	} else if !storable(e.ObservedAt) {
		bad("observed_at", "%s is outside the storable range (years 1678-2261)", e.ObservedAt.Format(time.RFC3339))
	}
	if !e.ReceivedAt.IsZero() && !storable(e.ReceivedAt) {
		bad("received_at", "%s is outside the storable range (years 1678-2261)", e.ReceivedAt.Format(time.RFC3339))
	}
	switch {
	case e.Source == "":
		bad("source", "required")
	case !ValidSource(e.Source):
		bad("source", "unknown source %q (want poller, libvirt-events, ferry-orchestrator, manual or import:<name>)", e.Source)
	}
	if (e.Kind.isPoller() || e.Kind.isMonitor()) && e.Host == "" {
		bad("host", "required for %s", e.Kind)
	}
	if (e.Kind.isVMLifecycle() || e.Kind.isMigration()) && e.VMName == "" && e.VMUUID == "" {
		bad("vm", "a VM name or UUID is required for %s", e.Kind)
	}
	if e.VMUUID != "" {
		if _, err := uuid.Parse(e.VMUUID); err != nil {
			bad("vm_uuid", "not a UUID: %q", e.VMUUID)
		}
	}
	if e.Kind.isMigration() && e.CorrelationID == "" {
		bad("correlation_id", "required for %s (the migration id)", e.Kind)
	}
	if len(e.DedupKey) > 256 {
		bad("dedup_key", "longer than 256 bytes")
	}
	p, err := e.DecodePayload()
	if err != nil {
		bad("payload", "%v", err)
	} else if e.Kind == MigrationCompleted && p.DowntimeMS == nil {
		bad("payload", "downtime_ms is required for %s (0 for a cold move)", e.Kind)
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// DefaultDedupKey derives a dedup key from (kind, host, vm, source,
// observed_at): the same observation delivered twice gets the same key.
func DefaultDedupKey(e *Event) string {
	vm := e.VMName
	if vm == "" {
		vm = e.VMUUID
	}
	h := sha256.New()
	for _, s := range []string{string(e.Kind), e.Host, vm, e.Source, strconv.FormatInt(e.ObservedAt.UnixNano(), 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Key returns the event's DedupKey, or DefaultDedupKey when it has none.
func (e *Event) Key() string {
	if e.DedupKey != "" {
		return e.DedupKey
	}
	return DefaultDedupKey(e)
}

// storable reports whether t fits in int64 Unix nanoseconds, the stored form.
func storable(t time.Time) bool {
	y := t.UTC().Year()
	return y > 1677 && y < 2262
}
