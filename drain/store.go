package drain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferryvm/ferry/journal"
)

// A drain's report lives in the journal's drains table: the columns other
// processes change or query (state, owner, cancel flag) and the report as
// JSON, written by its owner after every change.

func rowOf(r *Report) (journal.DrainRow, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return journal.DrainRow{}, err
	}
	return journal.DrainRow{ID: r.ID, Host: r.Host, State: r.State, Owner: r.Owner, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Report: body}, nil
}

// beginDrain records a new drain (refused while a live process drains the
// host: orchestrator.ErrBusy naming it).
func beginDrain(ctx context.Context, j *journal.Journal, r *Report) error {
	row, err := rowOf(r)
	if err != nil {
		return err
	}
	err = j.BeginDrain(ctx, row)
	var busy *journal.DrainBusyError
	if errors.As(err, &busy) {
		return busyRefusal(busy)
	}
	return err
}

func saveDrain(ctx context.Context, j *journal.Journal, r *Report) error {
	row, err := rowOf(r)
	if err != nil {
		return err
	}
	return j.SaveDrain(ctx, row)
}

// reportOf reads a stored drain; the row's columns are authoritative for
// what other processes change, and a running drain whose owner is gone is
// reported interrupted.
func reportOf(ctx context.Context, j *journal.Journal, row *journal.DrainRow) (*Report, error) {
	r := &Report{}
	if err := json.Unmarshal(row.Report, r); err != nil {
		return nil, fmt.Errorf("%w: drain %s: report: %w", journal.ErrDatabase, row.ID, err)
	}
	r.State, r.Owner, r.Cancel = row.State, row.Owner, row.Cancel
	if r.State == StateRunning && !j.OwnerAlive(ctx, row.Owner) {
		r.State = StateInterrupted
	}
	return r, nil
}

// Get reads a drain's report (ErrUnknown if none).
func Get(ctx context.Context, j *journal.Journal, id string) (*Report, error) {
	row, err := j.GetDrain(ctx, id)
	if err != nil {
		return nil, err
	}
	return reportOf(ctx, j, row)
}

// Last reads the most recent drain of a host (ErrUnknown if none).
func Last(ctx context.Context, j *journal.Journal, host string) (*Report, error) {
	row, err := j.LastDrain(ctx, host)
	if err != nil {
		return nil, err
	}
	return reportOf(ctx, j, row)
}

// Cancel asks the running drain with this id, or of this host, to stop
// starting moves (whichever process runs it), and returns its report; a
// finished drain is returned as it is. ErrUnknown when there is none.
func Cancel(ctx context.Context, j *journal.Journal, idOrHost string) (*Report, error) {
	row, err := j.CancelDrain(ctx, idOrHost)
	if err != nil {
		return nil, err
	}
	return reportOf(ctx, j, row)
}
