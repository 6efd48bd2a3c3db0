// The Log type: the SLA tables in ferry's state database, and the report
// read from them. Writes are in store_write.go, event queries in
// store_query.go, maintenance windows in store_maintenance.go.

package sla

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Schema of the SLA tables. The SQL is kept portable (SQLite and PostgreSQL):
// times are Unix nanoseconds in BIGINT columns, payloads are JSON text, and
// duplicates are skipped with INSERT ... ON CONFLICT DO NOTHING. A PostgreSQL
// port must make the id columns identity columns and rebind "?" placeholders.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS sla_events (
		id             INTEGER PRIMARY KEY,
		dedup_key      TEXT    NOT NULL UNIQUE,
		kind           TEXT    NOT NULL,
		host           TEXT    NOT NULL,
		vm_name        TEXT    NOT NULL,
		vm_uuid        TEXT    NOT NULL,
		source         TEXT    NOT NULL,
		observed_at    BIGINT  NOT NULL,
		received_at    BIGINT  NOT NULL,
		detail         TEXT    NOT NULL,
		correlation_id TEXT    NOT NULL,
		payload        TEXT
	)`,
	`CREATE INDEX IF NOT EXISTS sla_events_vm_name ON sla_events (vm_name)`,
	`CREATE INDEX IF NOT EXISTS sla_events_host ON sla_events (host)`,
	`CREATE INDEX IF NOT EXISTS sla_events_observed_at ON sla_events (observed_at)`,
	`CREATE TABLE IF NOT EXISTS sla_maintenance (
		id          INTEGER PRIMARY KEY,
		host        TEXT    NOT NULL,
		vm_name     TEXT    NOT NULL,
		starts_at   BIGINT  NOT NULL,
		ends_at     BIGINT  NOT NULL,
		reason      TEXT    NOT NULL,
		declared_at BIGINT  NOT NULL
	)`,
}

// Log is the SLA event log and the maintenance windows, kept in ferry's state
// database. It is safe for concurrent use.
type Log struct {
	db *sql.DB
	// Now stamps ReceivedAt and DeclaredAt when they are zero; nil means time.Now.
	Now func() time.Time
}

// NewLog creates the SLA tables and indexes if they do not exist.
func NewLog(ctx context.Context, db *sql.DB) (*Log, error) {
	if db == nil {
		return nil, errors.New("sla: nil database")
	}
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("sla: create schema: %w", err)
		}
	}
	return &Log{db: db}, nil
}

func (l *Log) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Report loads the events observed before p.To (earlier ones carry the state a
// period starts in: open outages, stopped VMs, which host a VM is on) and the
// maintenance windows overlapping p, and computes the availability report.
// opts.Now defaults to the log's clock.
func (l *Log) Report(ctx context.Context, p Period, opts Options) (Report, error) {
	evs, err := l.query(ctx, Filter{To: p.To}, false)
	if err != nil {
		return Report{}, err
	}
	ms, err := l.ListMaintenance(ctx, p.From, p.To)
	if err != nil {
		return Report{}, err
	}
	if opts.Now == nil {
		opts.Now = l.now
	}
	return Compute(evs, ms, p, opts)
}
