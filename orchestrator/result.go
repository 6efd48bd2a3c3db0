package orchestrator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/precopy"
)

// Result summarises a move: the common part, and the part of its kind
// (Live or Cold, the other nil). As JSON the kind's fields sit beside the
// common ones.
type Result struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	VM         string            `json:"vm"`
	VMUUID     string            `json:"vm_uuid,omitempty"`
	Source     string            `json:"source"`
	Dest       string            `json:"destination"`
	State      string            `json:"state"`
	DryRun     bool              `json:"dry_run,omitempty"`
	Checks     []placement.Check `json:"checks,omitempty"`
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
	TotalMS    int64             `json:"total_ms"`
	HookErrors []string          `json:"hook_errors,omitempty"`
	Error      string            `json:"error,omitempty"`

	Live *LiveResult `json:"-"`
	Cold *ColdResult `json:"-"`
}

// LiveResult is what a live move adds to its Result.
type LiveResult struct {
	MigrationMS int64         `json:"migration_ms"`
	Downtime    time.Duration `json:"-"`
	DowntimeMS  int64         `json:"downtime_ms"`
	MemoryBytes uint64        `json:"memory_bytes"`
	DataSent    uint64        `json:"data_sent_bytes"`
	Iterations  int           `json:"iterations"`
	Plan        *PlanInfo     `json:"plan,omitempty"`
	Strategy    string        `json:"strategy,omitempty"`
	Postcopy    bool          `json:"postcopy,omitempty"`
	// PolicyActions are the pre-copy policy's decisions, in order.
	PolicyActions []precopy.Action `json:"policy_actions,omitempty"`
	// MigrationTLS: the migration streams were encrypted.
	MigrationTLS bool     `json:"migration_tls"`
	Warnings     []string `json:"warnings,omitempty"`
}

// ColdResult is what a cold move adds to its Result.
type ColdResult struct {
	PlanOnly    bool                `json:"plan_only,omitempty"`
	Plan        *coldmove.Plan      `json:"plan,omitempty"`
	Artifacts   []coldmove.Artifact `json:"artifacts,omitempty"`
	ResumedFrom string              `json:"resumed_from,omitempty"`
	Shutdown    string              `json:"shutdown,omitempty"`
	KeepSource  bool                `json:"keep_source,omitempty"`
	// StartedOnDest: the VM was started on the destination (--start).
	StartedOnDest bool                 `json:"started"`
	SentBytes     int64                `json:"sent_bytes"`
	Warnings      []string             `json:"warnings,omitempty"`
	Pools         []coldmove.PoolSpace `json:"-"`
}

// Total is the move's wall time.
func (r *Result) Total() time.Duration { return r.FinishedAt.Sub(r.StartedAt) }

// SentBytes is what crossed the wire, whatever the kind.
func (r *Result) SentBytes() uint64 {
	switch {
	case r.Live != nil:
		return r.Live.DataSent
	case r.Cold != nil:
		return uint64(max(r.Cold.SentBytes, 0))
	}
	return 0
}

// resultCommon is Result without its methods, for encoding.
type resultCommon Result

// MarshalJSON writes the common fields, then the kind's.
func (r Result) MarshalJSON() ([]byte, error) {
	var part any
	switch {
	case r.Live != nil:
		part = r.Live
	case r.Cold != nil:
		part = r.Cold
	}
	return mergeJSON(resultCommon(r), part)
}

// UnmarshalJSON reads what MarshalJSON wrote; the kind field says which part.
func (r *Result) UnmarshalJSON(b []byte) error {
	var c resultCommon
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	*r = Result(c)
	if r.Kind == KindCold {
		r.Cold = &ColdResult{}
		return json.Unmarshal(b, r.Cold)
	}
	r.Live = &LiveResult{}
	return json.Unmarshal(b, r.Live)
}

// mergeJSON encodes two structs as one JSON object: a's fields, then b's
// (b may be nil). Their field names must not overlap.
func mergeJSON(a, b any) ([]byte, error) {
	ja, err := json.Marshal(a)
	if err != nil || b == nil {
		return ja, err
	}
	jb, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	ja, jb = bytes.TrimSpace(ja), bytes.TrimSpace(jb)
	if len(ja) < 2 || len(jb) < 2 || ja[0] != '{' || jb[0] != '{' {
		return nil, fmt.Errorf("mergeJSON: not two objects")
	}
	switch {
	case len(jb) == 2: // {}
		return ja, nil
	case len(ja) == 2:
		return jb, nil
	}
	out := append(ja[:len(ja)-1:len(ja)-1], ',')
	return append(out, jb[1:]...), nil
}
