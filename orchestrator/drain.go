package orchestrator

import (
	"context"
	"errors"
)

// Drain errors.
var (
	// ErrDrainIncomplete: the drain ended with VMs still on the host.
	ErrDrainIncomplete = errors.New("host not empty after drain")
	// ErrDrainCancelled: the drain was cancelled before it emptied the host.
	ErrDrainCancelled = errors.New("drain cancelled")
	// ErrUnknownDrain: no drain with that id.
	ErrUnknownDrain = errors.New("unknown drain")
)

// Drain marks req.Host in maintenance and moves every VM off it (live for
// running ones, cold for stopped ones unless RunningOnly) within the limits.
// Cancelling ctx stops new moves; moves in flight finish unless req.Abort is
// done, which rolls them back. The report is persisted as it changes.
// The error wraps ErrRefused for bad requests, ErrDrainCancelled or
// ErrDrainIncomplete when the host is not empty at the end.
func (c *Controller) Drain(ctx context.Context, req DrainRequest) (*DrainReport, error) {
	return nil, errors.New("drain: not implemented yet")
}

// GetDrain reads a drain's persisted report (ErrUnknownDrain if none).
func (j *Journal) GetDrain(ctx context.Context, id string) (*DrainReport, error) {
	return nil, ErrUnknownDrain
}

// CancelDrain asks the running drain with this id, or of this host, to stop
// starting moves; it returns the drain's report.
func (j *Journal) CancelDrain(ctx context.Context, idOrHost string) (*DrainReport, error) {
	return nil, ErrUnknownDrain
}
