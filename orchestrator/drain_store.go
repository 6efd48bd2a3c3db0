package orchestrator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// DrainInterrupted marks a drain whose process died; a re-run continues it.
const DrainInterrupted = "interrupted"

const drainSchema = `
CREATE TABLE IF NOT EXISTS drains (
	id TEXT PRIMARY KEY,
	host TEXT NOT NULL,
	state TEXT NOT NULL,
	owner TEXT NOT NULL,
	started_at INTEGER NOT NULL,
	finished_at INTEGER,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	report TEXT NOT NULL DEFAULT '',
	updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS drains_host ON drains(host, state);
`

func (j *Journal) ensureDrains(ctx context.Context) error {
	if _, err := j.db.ExecContext(ctx, drainSchema); err != nil {
		return fmt.Errorf("drain schema: %w", err)
	}
	return nil
}

// beginDrain records a new drain unless another live process drains the same
// host; drains of dead processes are marked interrupted (the new one
// continues their work). Check and insert share one write transaction.
func (j *Journal) beginDrain(ctx context.Context, r *DrainReport) error {
	if err := j.ensureDrains(ctx); err != nil {
		return err
	}
	if OwnedHere(r.Owner) {
		if _, err := j.Owner(ctx); err != nil {
			return err
		}
	}
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT id, owner FROM drains WHERE host = ? AND state = ?", r.Host, DrainRunning)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	var ids, owners []string
	for rows.Next() {
		var id, owner string
		if err := rows.Scan(&id, &owner); err != nil {
			rows.Close()
			return fmt.Errorf("drain: %w", err)
		}
		ids, owners = append(ids, id), append(owners, owner)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	var stale []string
	for i, id := range ids {
		alive, err := j.ownerAlive(ctx, tx, owners[i])
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if alive {
			return refuse(ErrBusy, nil, "host %s is already being drained by drain %s (%s); watch it with `ferry drain %s --status` or stop it with `ferry drain %s --cancel`",
				r.Host, id, describeOwner(owners[i]), r.Host, r.Host)
		}
		stale = append(stale, id)
	}
	now := ms(j.now())
	for _, id := range stale {
		if _, err := tx.ExecContext(ctx, "UPDATE drains SET state = ?, finished_at = ?, updated_at = ? WHERE id = ?", DrainInterrupted, now, now, id); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	body, _ := json.Marshal(r)
	if _, err := tx.ExecContext(ctx, "INSERT INTO drains (id, host, state, owner, started_at, report, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		r.ID, r.Host, r.State, r.Owner, ms(r.StartedAt), string(body), now); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return tx.Commit()
}

// saveDrain writes the report (state and progress).
func (j *Journal) saveDrain(ctx context.Context, r *DrainReport) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var fin any
	if !r.FinishedAt.IsZero() {
		fin = ms(r.FinishedAt)
	}
	_, err = j.db.ExecContext(ctx, "UPDATE drains SET state = ?, finished_at = ?, report = ?, updated_at = ? WHERE id = ?",
		r.State, fin, string(body), ms(j.now()), r.ID)
	if err != nil {
		return fmt.Errorf("drain save: %w", err)
	}
	return nil
}

// drainCancelRequested reads the cancel flag another process may have set.
func (j *Journal) drainCancelRequested(ctx context.Context, id string) (bool, error) {
	var c int
	err := j.db.QueryRowContext(ctx, "SELECT cancel_requested FROM drains WHERE id = ?", id).Scan(&c)
	return c != 0, err
}

func (j *Journal) scanDrain(ctx context.Context, row *sql.Row) (*DrainReport, error) {
	var body, state, owner string
	var cancel int
	if err := row.Scan(&body, &state, &owner, &cancel); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrUnknownDrain
		}
		return nil, fmt.Errorf("drain: %w", err)
	}
	r := &DrainReport{}
	if err := json.Unmarshal([]byte(body), r); err != nil {
		return nil, fmt.Errorf("drain report: %w", err)
	}
	// The row's columns are authoritative for what other processes change.
	r.State, r.Owner, r.Cancel = state, owner, cancel != 0
	if r.State == DrainRunning && !j.OwnerAlive(ctx, owner) {
		r.State = DrainInterrupted
	}
	return r, nil
}

// GetDrain reads a drain's persisted report (ErrUnknownDrain if none).
func (j *Journal) GetDrain(ctx context.Context, id string) (*DrainReport, error) {
	if err := j.ensureDrains(ctx); err != nil {
		return nil, err
	}
	return j.scanDrain(ctx, j.db.QueryRowContext(ctx, "SELECT report, state, owner, cancel_requested FROM drains WHERE id = ?", id))
}

// LastDrain returns the most recent drain of a host (ErrUnknownDrain if none).
func (j *Journal) LastDrain(ctx context.Context, host string) (*DrainReport, error) {
	if err := j.ensureDrains(ctx); err != nil {
		return nil, err
	}
	return j.scanDrain(ctx, j.db.QueryRowContext(ctx, "SELECT report, state, owner, cancel_requested FROM drains WHERE host = ? ORDER BY started_at DESC LIMIT 1", host))
}

// CancelDrain asks the running drain with this id, or of this host, to stop
// starting moves; it returns the drain's report. ErrUnknownDrain when no
// drain with that id or no running drain of that host exists.
func (j *Journal) CancelDrain(ctx context.Context, idOrHost string) (*DrainReport, error) {
	if err := j.ensureDrains(ctx); err != nil {
		return nil, err
	}
	res, err := j.db.ExecContext(ctx, "UPDATE drains SET cancel_requested = 1, updated_at = ? WHERE (id = ? OR host = ?) AND state = ?",
		ms(j.now()), idOrHost, idOrHost, DrainRunning)
	if err != nil {
		return nil, fmt.Errorf("drain cancel: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if r, err := j.GetDrain(ctx, idOrHost); err == nil {
			return r, nil // already finished: nothing to cancel
		}
		return nil, fmt.Errorf("%w: no running drain %q (give a drain id or a host being drained)", ErrUnknownDrain, idOrHost)
	}
	r, err := j.GetDrain(ctx, idOrHost)
	if errors.Is(err, ErrUnknownDrain) {
		return j.scanDrain(ctx, j.db.QueryRowContext(ctx, "SELECT report, state, owner, cancel_requested FROM drains WHERE host = ? AND state = ? ORDER BY started_at DESC LIMIT 1", idOrHost, DrainRunning))
	}
	return r, err
}
