package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Drain states the journal itself acts on; package drain owns the others.
const (
	DrainRunning = "running"
	// DrainInterrupted marks a drain whose process died; a re-run continues it.
	DrainInterrupted = "interrupted"
)

// DrainRow is one drain: the columns other processes change or query, and
// the report its owner keeps (JSON, package drain's DrainReport).
type DrainRow struct {
	ID, Host, State, Owner string
	StartedAt              time.Time
	FinishedAt             time.Time // zero while it runs
	Cancel                 bool      // someone asked it to stop starting moves
	Report                 []byte
}

// BeginDrain records a new drain unless a live process drains the same host
// (*DrainBusyError); drains of dead processes are marked interrupted (the
// new one continues their work). Check and insert share one write transaction.
func (j *Journal) BeginDrain(ctx context.Context, r DrainRow) error {
	if OwnedHere(r.Owner) {
		if _, err := j.Owner(ctx); err != nil {
			return err
		}
	}
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err, "drain")
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, j.d.rebind("SELECT id, owner FROM drains WHERE host = ? AND state = ?"), r.Host, DrainRunning)
	if err != nil {
		return dbErr(err, "drain")
	}
	var ids, owners []string
	for rows.Next() {
		var id, owner string
		if err := rows.Scan(&id, &owner); err != nil {
			rows.Close()
			return dbErr(err, "drain")
		}
		ids, owners = append(ids, id), append(owners, owner)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return dbErr(err, "drain")
	}
	var stale []string
	for i, id := range ids {
		alive, err := j.ownerAlive(ctx, tx, owners[i])
		if err != nil {
			return err
		}
		if alive {
			return &DrainBusyError{Host: r.Host, ID: id, Owner: owners[i]}
		}
		stale = append(stale, id)
	}
	now := ms(j.now())
	for _, id := range stale {
		if _, err := j.exec(ctx, tx, "UPDATE drains SET state = ?, finished_at = ?, updated_at = ? WHERE id = ?", DrainInterrupted, now, now, id); err != nil {
			return dbErr(err, "drain")
		}
	}
	if _, err := j.exec(ctx, tx, "INSERT INTO drains (id, host, state, owner, started_at, report, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		r.ID, r.Host, r.State, r.Owner, ms(r.StartedAt), string(r.Report), now); err != nil {
		return dbErr(err, "drain")
	}
	return dbErr(tx.Commit(), "drain")
}

// SaveDrain writes a drain's state, end and report.
func (j *Journal) SaveDrain(ctx context.Context, r DrainRow) error {
	var fin any
	if !r.FinishedAt.IsZero() {
		fin = ms(r.FinishedAt)
	}
	_, err := j.exec(ctx, j.db, "UPDATE drains SET state = ?, finished_at = ?, report = ?, updated_at = ? WHERE id = ?",
		r.State, fin, string(r.Report), ms(j.now()), r.ID)
	return dbErr(err, "drain save")
}

// DrainCancelRequested reads the cancel flag another process may have set.
func (j *Journal) DrainCancelRequested(ctx context.Context, id string) (bool, error) {
	var c int
	err := j.db.QueryRowContext(ctx, j.d.rebind("SELECT cancel_requested FROM drains WHERE id = ?"), id).Scan(&c)
	return c != 0, dbErr(err, "drain cancel flag")
}

const drainCols = "id, host, state, owner, started_at, finished_at, cancel_requested, report"

func (j *Journal) scanDrain(row *sql.Row) (*DrainRow, error) {
	var r DrainRow
	var started int64
	var finished sql.NullInt64
	var cancel int
	var report string
	if err := row.Scan(&r.ID, &r.Host, &r.State, &r.Owner, &started, &finished, &cancel, &report); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrUnknownDrain
		}
		return nil, dbErr(err, "drain")
	}
	r.StartedAt, r.Cancel, r.Report = time.UnixMilli(started), cancel != 0, []byte(report)
	if finished.Valid {
		r.FinishedAt = time.UnixMilli(finished.Int64)
	}
	return &r, nil
}

// GetDrain reads a drain (ErrUnknownDrain if none).
func (j *Journal) GetDrain(ctx context.Context, id string) (*DrainRow, error) {
	return j.scanDrain(j.db.QueryRowContext(ctx, j.d.rebind("SELECT "+drainCols+" FROM drains WHERE id = ?"), id))
}

// LastDrain returns the most recent drain of a host (ErrUnknownDrain if none).
func (j *Journal) LastDrain(ctx context.Context, host string) (*DrainRow, error) {
	return j.scanDrain(j.db.QueryRowContext(ctx, j.d.rebind("SELECT "+drainCols+" FROM drains WHERE host = ? ORDER BY started_at DESC LIMIT 1"), host))
}

// CancelDrain asks the running drain with this id, or of this host, to stop
// starting moves, and returns it; a drain already finished is returned as it
// is. ErrUnknownDrain when no drain has that id and none of that host runs.
func (j *Journal) CancelDrain(ctx context.Context, idOrHost string) (*DrainRow, error) {
	res, err := j.exec(ctx, j.db, "UPDATE drains SET cancel_requested = 1, updated_at = ? WHERE (id = ? OR host = ?) AND state = ?",
		ms(j.now()), idOrHost, idOrHost, DrainRunning)
	if err != nil {
		return nil, dbErr(err, "drain cancel")
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if r, err := j.GetDrain(ctx, idOrHost); err == nil {
			return r, nil // already finished: nothing to cancel
		}
		return nil, fmt.Errorf("%w: no running drain %q (give a drain id or a host being drained)", ErrUnknownDrain, idOrHost)
	}
	r, err := j.GetDrain(ctx, idOrHost)
	if errors.Is(err, ErrUnknownDrain) {
		return j.scanDrain(j.db.QueryRowContext(ctx, j.d.rebind("SELECT "+drainCols+" FROM drains WHERE host = ? AND state = ? ORDER BY started_at DESC LIMIT 1"), idOrHost, DrainRunning))
	}
	return r, err
}
