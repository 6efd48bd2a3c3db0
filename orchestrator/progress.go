package orchestrator

import (
	"time"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/journal"
)

// Progress is a snapshot reported during a move: the common part and the
// part of its kind (as JSON, side by side).
type Progress struct {
	ID        string        `json:"id"`
	Kind      string        `json:"kind"`
	VM        string        `json:"vm"`
	Stage     journal.Stage `json:"-"`
	StageName string        `json:"stage"`
	Message   string        `json:"message,omitempty"`
	Elapsed   time.Duration `json:"-"`
	ElapsedMS int64         `json:"elapsed_ms"`
	Percent   float64       `json:"percent"`

	Live *LiveProgress `json:"-"`
	Cold *ColdProgress `json:"-"`
}

// LiveProgress is a live move's job as the last sample saw it.
type LiveProgress struct {
	Iteration            int           `json:"iteration"`
	TotalBytes           uint64        `json:"total_bytes"`
	ProcessedBytes       uint64        `json:"processed_bytes"`
	RemainingBytes       uint64        `json:"remaining_bytes"`
	DirtyBytesPerSec     uint64        `json:"dirty_bytes_per_sec"`
	BandwidthBytesPerSec uint64        `json:"bandwidth_bytes_per_sec"`
	ExpectedDowntime     time.Duration `json:"-"`
	ExpectedDowntimeMS   int64         `json:"expected_downtime_ms"`
	DowntimeLimitMS      int64         `json:"downtime_limit_ms,omitempty"`
	ThrottlePct          int           `json:"throttle_pct,omitempty"`
	Strategy             string        `json:"strategy,omitempty"`
	Postcopy             bool          `json:"postcopy,omitempty"`
	// Policy is the reason of the pre-copy policy's latest action.
	Policy string `json:"policy,omitempty"`
}

// ColdProgress is a cold move's copy as its last step reported it (the
// step's message is Progress.Message).
type ColdProgress struct {
	coldmove.Progress
	RateBytesPerSec uint64 `json:"rate_bytes_per_sec"` // data on the wire
	ETAMS           int64  `json:"eta_ms"`
}

// SentBytes is what crossed the wire so far, whatever the kind.
func (p Progress) SentBytes() uint64 {
	switch {
	case p.Live != nil:
		return p.Live.ProcessedBytes
	case p.Cold != nil:
		return uint64(max(p.Cold.MoveSentBytes, 0))
	}
	return 0
}

// Postcopy reports a live move running in post-copy.
func (p Progress) Postcopy() bool { return p.Live != nil && p.Live.Postcopy }

type progressCommon Progress

// MarshalJSON writes the common fields, then the kind's.
func (p Progress) MarshalJSON() ([]byte, error) {
	var part any
	switch {
	case p.Live != nil:
		part = p.Live
	case p.Cold != nil:
		part = p.Cold
	}
	return mergeJSON(progressCommon(p), part)
}
