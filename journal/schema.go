package journal

import (
	"context"
	"database/sql"
	"fmt"
)

// step is one numbered schema migration. Steps only ever get appended: a
// state file records the last one applied (table schema_version) and Open
// applies the ones after it, each in its own transaction.
type step struct {
	version int
	what    string
	sql     []string
	// optional statements may fail without failing the step (an index a
	// file written by an old version cannot take); they run after the steps.
	optional []string
}

// steps is the schema's history. Step 1 is the schema ferry created with
// CREATE ... IF NOT EXISTS before versions existed, so it also adopts those
// files as they are.
var steps = []step{
	{version: 1, what: "migrations, reservations, move slots, owner leases, drains, maintenance, cold artifacts",
		sql: []string{
			`CREATE TABLE IF NOT EXISTS migrations (
				id TEXT PRIMARY KEY,
				kind TEXT NOT NULL,
				vm_name TEXT NOT NULL,
				vm_uuid TEXT NOT NULL DEFAULT '',
				src_name TEXT NOT NULL DEFAULT '',
				src_uri TEXT NOT NULL DEFAULT '',
				dst_name TEXT NOT NULL DEFAULT '',
				dst_uri TEXT NOT NULL DEFAULT '',
				state TEXT NOT NULL,
				stage INTEGER NOT NULL DEFAULT 0,
				t_premigration INTEGER,
				t_reservation INTEGER,
				t_precopy INTEGER,
				t_stopcopy INTEGER,
				t_commitment INTEGER,
				t_activation INTEGER,
				started_at INTEGER NOT NULL,
				finished_at INTEGER,
				memory_bytes INTEGER NOT NULL DEFAULT 0,
				data_total INTEGER NOT NULL DEFAULT 0,
				data_sent INTEGER NOT NULL DEFAULT 0,
				iterations INTEGER NOT NULL DEFAULT 0,
				downtime_ms INTEGER,
				options TEXT NOT NULL DEFAULT '',
				vm_xml TEXT NOT NULL DEFAULT '',
				error TEXT NOT NULL DEFAULT '',
				notes TEXT NOT NULL DEFAULT '',
				owner TEXT NOT NULL DEFAULT '',
				policy TEXT NOT NULL DEFAULT '',
				updated_at INTEGER NOT NULL
			)`,
			`CREATE INDEX IF NOT EXISTS migrations_state ON migrations(state)`,
			`CREATE INDEX IF NOT EXISTS migrations_vm ON migrations(vm_uuid)`,
			`CREATE TABLE IF NOT EXISTS reservations (
				migration_id TEXT PRIMARY KEY,
				host_key TEXT NOT NULL,
				host_name TEXT NOT NULL,
				memory_bytes INTEGER NOT NULL,
				created_at INTEGER NOT NULL,
				released_at INTEGER
			)`,
			`CREATE INDEX IF NOT EXISTS reservations_open ON reservations(host_key, released_at)`,
			`CREATE TABLE IF NOT EXISTS move_slots (
				migration_id TEXT PRIMARY KEY,
				src_key TEXT NOT NULL,
				src_name TEXT NOT NULL,
				dst_key TEXT NOT NULL,
				dst_name TEXT NOT NULL,
				created_at INTEGER NOT NULL,
				released_at INTEGER
			)`,
			`CREATE INDEX IF NOT EXISTS move_slots_open ON move_slots(released_at)`,
			`CREATE TABLE IF NOT EXISTS owner_leases (
				owner TEXT PRIMARY KEY,
				machine TEXT NOT NULL,
				pid INTEGER NOT NULL,
				renewed_at INTEGER NOT NULL
			)`,
			`CREATE TABLE IF NOT EXISTS drains (
				id TEXT PRIMARY KEY,
				host TEXT NOT NULL,
				state TEXT NOT NULL,
				owner TEXT NOT NULL,
				started_at INTEGER NOT NULL,
				finished_at INTEGER,
				cancel_requested INTEGER NOT NULL DEFAULT 0,
				report TEXT NOT NULL DEFAULT '',
				updated_at INTEGER NOT NULL
			)`,
			`CREATE INDEX IF NOT EXISTS drains_host ON drains(host, state)`,
			`CREATE TABLE IF NOT EXISTS host_maintenance (
				host_name TEXT PRIMARY KEY,
				since INTEGER NOT NULL,
				reason TEXT NOT NULL DEFAULT ''
			)`,
			`CREATE TABLE IF NOT EXISTS cold_artifacts (
				migration_id TEXT NOT NULL,
				idx INTEGER NOT NULL,
				kind TEXT NOT NULL,
				target TEXT NOT NULL DEFAULT '',
				src_path TEXT NOT NULL,
				dst_pool TEXT NOT NULL DEFAULT '',
				dst_path TEXT NOT NULL,
				format TEXT NOT NULL DEFAULT '',
				capacity_bytes INTEGER NOT NULL DEFAULT 0,
				allocated_bytes INTEGER NOT NULL DEFAULT 0,
				physical_bytes INTEGER NOT NULL DEFAULT 0,
				sent_bytes INTEGER NOT NULL DEFAULT 0,
				sparse INTEGER NOT NULL DEFAULT 0,
				keep_on_source INTEGER NOT NULL DEFAULT 0,
				skipped INTEGER NOT NULL DEFAULT 0,
				checksum TEXT NOT NULL DEFAULT '',
				state TEXT NOT NULL,
				duration_ms INTEGER NOT NULL DEFAULT 0,
				updated_at INTEGER NOT NULL,
				PRIMARY KEY (migration_id, idx)
			)`,
			`CREATE TABLE IF NOT EXISTS cold_artifact_source (
				migration_id TEXT NOT NULL,
				idx INTEGER NOT NULL,
				source_stamp TEXT NOT NULL DEFAULT '',
				keep_reason TEXT NOT NULL DEFAULT '',
				kept_by TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (migration_id, idx)
			)`,
		},
		// One unfinished move per VM as a constraint, for every process and
		// engine (Claim checks first, to name the winner). A file that holds
		// duplicates from before the index keeps working on Claim's check alone.
		optional: []string{`CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_open ON migrations(vm_uuid)
			WHERE vm_uuid <> '' AND state IN ('running', 'failed')`},
	},
}

// SchemaVersion is the newest schema this ferry knows.
func SchemaVersion() int { return steps[len(steps)-1].version }

// migrate applies the steps a state file lacks. A file written by a newer
// ferry is refused rather than misread.
func (j *Journal) migrate(ctx context.Context) error {
	if _, err := j.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return dbErr(err, "schema_version")
	}
	have, err := j.version(ctx, j.db)
	if err != nil {
		return err
	}
	if have > SchemaVersion() {
		return fmt.Errorf("%w: the state database has schema version %d, this ferry knows up to %d: use a newer ferry", ErrDatabase, have, SchemaVersion())
	}
	for _, s := range steps {
		if s.version <= have {
			continue
		}
		if err := j.apply(ctx, s); err != nil {
			return err
		}
	}
	// Tried at every open, outside any transaction: a file that could not
	// take one before (duplicates since resolved) takes it now.
	for _, s := range steps {
		for _, q := range s.optional {
			_, _ = j.db.ExecContext(ctx, q)
		}
	}
	return nil
}

func (j *Journal) version(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil {
		return 0, dbErr(err, "schema version")
	}
	return int(v.Int64), nil
}

// apply runs one step in a write transaction; two processes opening a fresh
// file at once apply it once (the second finds it done).
func (j *Journal) apply(ctx context.Context, s step) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err, "schema step %d", s.version)
	}
	defer tx.Rollback()
	if have, err := j.version(ctx, tx); err != nil || have >= s.version {
		return err
	}
	for _, q := range s.sql {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return dbErr(err, "schema step %d (%s)", s.version, s.what)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, s.version); err != nil {
		return dbErr(err, "schema step %d", s.version)
	}
	return dbErr(tx.Commit(), "schema step %d", s.version)
}
