// Writing events: validation, the prepared INSERT, and the transactions
// (a tuned one for bulk inserts) that Append and Import run in.

package sla

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// insertSQL adds one event, skipping it if its dedup key is stored already.
// One prepared single-row INSERT per event inside one transaction is the
// fastest form on modernc.org/sqlite: multi-row VALUES lists were measured
// slower, because each such statement opens a statement journal.
const insertSQL = `INSERT INTO sla_events (dedup_key, kind, host, vm_name, vm_uuid, source,
	observed_at, received_at, detail, correlation_id, payload)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING`

// inserter writes events with a prepared statement inside one transaction
// and counts the rows that were new.
type inserter struct {
	stmt     *sql.Stmt
	inserted int
}

func newInserter(ctx context.Context, tx *sql.Tx) (*inserter, error) {
	stmt, err := tx.PrepareContext(ctx, insertSQL)
	if err != nil {
		return nil, err
	}
	return &inserter{stmt: stmt}, nil
}

// add inserts e, which must be valid and have its DedupKey and ReceivedAt set.
func (in *inserter) add(ctx context.Context, e *Event) error {
	var payload any
	if len(e.Payload) > 0 {
		payload = string(e.Payload)
	}
	res, err := in.stmt.ExecContext(ctx, e.DedupKey, string(e.Kind), e.Host, e.VMName, e.VMUUID, e.Source,
		e.ObservedAt.UnixNano(), e.ReceivedAt.UnixNano(), e.Detail, e.CorrelationID, payload)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	in.inserted += int(n)
	return nil
}

func (in *inserter) close() { in.stmt.Close() }

// prepare validates e and fills in its DedupKey and ReceivedAt.
func (l *Log) prepare(e *Event, received time.Time) error {
	if err := e.Validate(); err != nil {
		return err
	}
	if e.DedupKey == "" {
		e.DedupKey = DefaultDedupKey(e)
	}
	if e.ReceivedAt.IsZero() {
		e.ReceivedAt = received
	}
	return nil
}

// Append stores events in one transaction: all of them or none. An event whose
// dedup key is already stored (or repeated within evs) is skipped silently;
// inserted counts the rows actually added. IDs given in evs are ignored.
func (l *Log) Append(ctx context.Context, evs ...Event) (inserted int, err error) {
	if len(evs) == 0 {
		return 0, nil
	}
	received := l.now()
	rows := make([]Event, len(evs))
	var errs []error
	for i := range evs {
		rows[i] = evs[i]
		if err := l.prepare(&rows[i], received); err != nil {
			errs = append(errs, fmt.Errorf("event %d (%s): %w", i, evs[i].Kind, err))
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("sla: append: %w", errors.Join(errs...))
	}
	run := l.inTx
	if len(rows) > bulkRows {
		run = l.bulkTx
	}
	err = run(ctx, func(tx *sql.Tx) error {
		in, err := newInserter(ctx, tx)
		if err != nil {
			return err
		}
		defer in.close()
		for i := range rows {
			if err := in.add(ctx, &rows[i]); err != nil {
				return err
			}
		}
		inserted = in.inserted
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sla: append: %w", err)
	}
	return inserted, nil
}

func (l *Log) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	return runTx(ctx, l.db.BeginTx, f)
}

// runTx runs f in a transaction from begin (a *sql.DB's or a *sql.Conn's
// BeginTx): committed if f succeeds, rolled back if not.
func runTx(ctx context.Context, begin func(context.Context, *sql.TxOptions) (*sql.Tx, error), f func(*sql.Tx) error) error {
	tx, err := begin(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// bulkCacheKiB is the page cache a bulk insert uses. With SQLite's default
// 2 MiB, a million-event transaction spills dirty pages of its four indexes
// and imports about half as fast; beyond 64–128 MiB nothing was gained.
const bulkCacheKiB = 128 << 10

// bulkRows is the size from which Append uses bulkTx.
const bulkRows = 10000

// bulkTx runs f in a transaction on a dedicated connection tuned for a large
// insert (a bigger page cache), and restores the connection's settings
// afterwards. The tuning is SQLite's; on a database
// that rejects it, it is skipped.
func (l *Log) bulkTx(ctx context.Context, f func(*sql.Tx) error) error {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var cache sql.NullInt64
	if conn.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache) == nil && cache.Valid {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", bulkCacheKiB)); err == nil {
			defer func() {
				// Restore with a context that is not cancelled, and free the cache.
				bg := context.WithoutCancel(ctx)
				conn.ExecContext(bg, fmt.Sprintf("PRAGMA cache_size = %d", cache.Int64))
				conn.ExecContext(bg, "PRAGMA shrink_memory")
			}()
		}
	}
	return runTx(ctx, conn.BeginTx, f)
}
