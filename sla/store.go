package sla

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// ErrNotFound is returned when a maintenance window to remove does not exist.
var ErrNotFound = errors.New("not found")

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
	tx, err := l.db.BeginTx(ctx, nil)
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
// insert (a bigger page cache), and restores the
// connection's settings afterwards. The tuning is SQLite's; on a database
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
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Filter selects events. Zero fields do not filter.
type Filter struct {
	// VM matches the VM name or UUID.
	VM   string
	Host string
	// Kinds keeps only these kinds.
	Kinds []Kind
	// From (inclusive) and To (exclusive) bound ObservedAt.
	From, To      time.Time
	CorrelationID string
	// AfterID keeps only events stored after the one with this id.
	AfterID int64
	// Limit caps the number of events returned; 0 means no limit.
	Limit int
	// Newest makes Limit keep the newest events rather than the oldest
	// (they are still returned oldest first).
	Newest bool
}

// Query returns the events matching f ordered by ObservedAt, then ID.
func (l *Log) Query(ctx context.Context, f Filter) ([]Event, error) {
	return l.query(ctx, f, true)
}

// Tail returns up to limit events stored after the one with id afterID, in
// the order they were stored (by id): what a follower of the log has not
// seen yet, whatever their ObservedAt.
func (l *Log) Tail(ctx context.Context, afterID int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := l.db.QueryContext(ctx, selectEvents+` WHERE id > ? ORDER BY id LIMIT ?`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("sla: tail events: %w", err)
	}
	return scanEvents(rows, nil)
}

// ByID returns the events with the given ids, ordered by ObservedAt, then
// ID; ids that do not exist are skipped.
func (l *Log) ByID(ctx context.Context, ids []int64) ([]Event, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var out []Event
	const chunk = 500
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		rows, err := l.db.QueryContext(ctx, selectEvents+` WHERE id IN (?`+strings.Repeat(", ?", n-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("sla: events by id: %w", err)
		}
		if out, err = scanEvents(rows, out); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	slices.SortFunc(out, func(a, b Event) int {
		if c := a.ObservedAt.Compare(b.ObservedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// LastID is the id of the newest stored event (0 for an empty log).
func (l *Log) LastID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT max(id) FROM sla_events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("sla: last id: %w", err)
	}
	return id.Int64, nil
}

// Last returns the newest event matching f (by ObservedAt, then ID); ok is
// false when none does.
func (l *Log) Last(ctx context.Context, f Filter) (e Event, ok bool, err error) {
	f.Limit, f.Newest = 1, true
	evs, err := l.Query(ctx, f)
	if err != nil || len(evs) == 0 {
		return Event{}, false, err
	}
	return evs[0], true, nil
}

// MigrationGrace is how long after a migration's last event the lifecycle
// events of its VM are still attributed to it: libvirt's events of the
// switchover can be delivered after the orchestrator wrote the outcome.
const MigrationGrace = 30 * time.Second

// MigrationAt returns the correlation id of the migration of vm (a name or
// UUID; either may be empty) under way at t: planned no later than t and not
// ended more than MigrationGrace before t. Migrations planned more than a
// day before t are not considered. "" when there is none.
func (l *Log) MigrationAt(ctx context.Context, vm, vmUUID string, t time.Time) (string, error) {
	if vm == "" && vmUUID == "" {
		return "", nil
	}
	if vm == "" {
		vm = vmUUID
	}
	if vmUUID == "" {
		vmUUID = vm
	}
	rows, err := l.db.QueryContext(ctx, `SELECT correlation_id, kind, observed_at FROM sla_events
		WHERE (vm_name = ? OR vm_uuid = ? OR vm_name = ? OR vm_uuid = ?) AND kind IN (?, ?, ?, ?, ?)
		AND observed_at >= ? AND observed_at <= ? ORDER BY observed_at, id`,
		vm, vm, vmUUID, vmUUID,
		string(MigrationPlanned), string(MigrationSwitchover), string(MigrationCompleted), string(MigrationFailed), string(MigrationRolledBack),
		t.Add(-24*time.Hour).UnixNano(), t.Add(MigrationGrace).UnixNano())
	if err != nil {
		return "", fmt.Errorf("sla: migration lookup: %w", err)
	}
	defer rows.Close()
	type mig struct {
		planned  bool
		end      int64
		ended    bool
		lastSeen int64
	}
	migs := map[string]*mig{}
	var order []string
	for rows.Next() {
		var (
			id, kind string
			at       int64
		)
		if err := rows.Scan(&id, &kind, &at); err != nil {
			return "", fmt.Errorf("sla: migration lookup: %w", err)
		}
		m := migs[id]
		if m == nil {
			m = &mig{}
			migs[id] = m
			order = append(order, id)
		}
		m.lastSeen = at
		switch Kind(kind) {
		case MigrationPlanned, MigrationSwitchover:
			m.planned = m.planned || at <= t.UnixNano()
		default:
			if !m.ended {
				m.ended, m.end = true, at
			}
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("sla: migration lookup: %w", err)
	}
	// The most recently planned migration that covers t.
	for i := len(order) - 1; i >= 0; i-- {
		m := migs[order[i]]
		if m.planned && (!m.ended || m.end >= t.Add(-MigrationGrace).UnixNano()) {
			return order[i], nil
		}
	}
	return "", nil
}

// selectEvents reads the columns scanEvents expects.
const selectEvents = `SELECT id, dedup_key, kind, host, vm_name, vm_uuid, source, observed_at, received_at,
		detail, correlation_id, payload FROM sla_events`

// query reads events; unordered reads scan the table in storage order, much
// faster for a whole log (Compute sorts anyway).
func (l *Log) query(ctx context.Context, f Filter, ordered bool) ([]Event, error) {
	var (
		where []string
		args  []any
	)
	if f.VM != "" {
		where = append(where, "(vm_name = ? OR vm_uuid = ?)")
		args = append(args, f.VM, f.VM)
	}
	if f.Host != "" {
		where = append(where, "host = ?")
		args = append(args, f.Host)
	}
	if len(f.Kinds) > 0 {
		where = append(where, "kind IN (?"+strings.Repeat(", ?", len(f.Kinds)-1)+")")
		for _, k := range f.Kinds {
			args = append(args, string(k))
		}
	}
	if !f.From.IsZero() {
		where = append(where, "observed_at >= ?")
		args = append(args, f.From.UnixNano())
	}
	if !f.To.IsZero() {
		if ordered {
			where = append(where, "observed_at < ?")
		} else {
			// A whole-history read: the unary plus keeps the planner from
			// reading a million rows through the index in time order
			// (random table lookups) instead of scanning the table.
			where = append(where, "+observed_at < ?")
		}
		args = append(args, f.To.UnixNano())
	}
	if f.CorrelationID != "" {
		where = append(where, "correlation_id = ?")
		args = append(args, f.CorrelationID)
	}
	if f.AfterID > 0 {
		where = append(where, "id > ?")
		args = append(args, f.AfterID)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var out []Event
	if !ordered && f.Limit == 0 {
		// A whole-log read: size the result once instead of regrowing a
		// slice of a million events.
		var n int
		if err := l.db.QueryRowContext(ctx, "SELECT count(*) FROM sla_events"+cond, args...).Scan(&n); err != nil {
			return nil, fmt.Errorf("sla: query events: %w", err)
		}
		out = make([]Event, 0, n)
	}
	q := selectEvents + cond
	switch {
	case ordered && f.Newest && f.Limit > 0:
		q = "SELECT * FROM (" + q + " ORDER BY observed_at DESC, id DESC LIMIT ?) AS newest ORDER BY observed_at, id"
		args = append(args, f.Limit)
	case ordered:
		q += " ORDER BY observed_at, id"
		fallthrough
	default:
		if f.Limit > 0 {
			q += " LIMIT ?"
			args = append(args, f.Limit)
		}
	}
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sla: query events: %w", err)
	}
	return scanEvents(rows, out)
}

// scanEvents reads rows of selectEvents into out and closes them.
func scanEvents(rows *sql.Rows, out []Event) ([]Event, error) {
	defer rows.Close()
	var (
		in                                   = interner{}
		kind, host, vm, vmUUID, source, corr sql.RawBytes
		payload                              sql.NullString
		obs, rcv                             int64
	)
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.DedupKey, &kind, &host, &vm, &vmUUID, &source, &obs, &rcv,
			&e.Detail, &corr, &payload); err != nil {
			return nil, fmt.Errorf("sla: query events: %w", err)
		}
		e.Kind = Kind(in.get(kind))
		e.Host, e.VMName, e.VMUUID, e.Source = in.get(host), in.get(vm), in.get(vmUUID), in.get(source)
		e.CorrelationID = in.get(corr)
		e.ObservedAt, e.ReceivedAt = time.Unix(0, obs).UTC(), time.Unix(0, rcv).UTC()
		if payload.Valid && payload.String != "" {
			e.Payload = json.RawMessage(payload.String)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sla: query events: %w", err)
	}
	return out, nil
}

// interner shares the storage of the few distinct host, VM, kind and source
// strings across a large query result.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := string(b)
	in[s] = s
	return s
}

// Maintenance is a declared maintenance window for one host or one VM. It is
// excluded from downtime and eligible time only if it was declared in advance
// (DeclaredAt not after From).
type Maintenance struct {
	ID int64 `json:"id,omitempty"`
	// Exactly one of Host and VM is set. A host window covers the VMs that
	// were on the host during the window.
	Host       string    `json:"host,omitempty"`
	VM         string    `json:"vm,omitempty"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Reason     string    `json:"reason,omitempty"`
	DeclaredAt time.Time `json:"declared_at"`
}

// InAdvance reports whether the window was declared no later than its start.
func (m Maintenance) InAdvance() bool { return !m.DeclaredAt.After(m.From) }

// Validate checks the window's fields.
func (m Maintenance) Validate() error {
	var errs []error
	bad := func(field, reason string) { errs = append(errs, &FieldError{Field: field, Reason: reason}) }
	switch {
	case m.Host == "" && m.VM == "":
		bad("host", "a host or a VM is required")
	case m.Host != "" && m.VM != "":
		bad("vm", "set a host or a VM, not both")
	}
	switch {
	case m.From.IsZero():
		bad("from", "required")
	case !storable(m.From):
		bad("from", "outside the storable range")
	}
	switch {
	case m.To.IsZero():
		bad("to", "required")
	case !storable(m.To):
		bad("to", "outside the storable range")
	case !m.From.IsZero() && !m.To.After(m.From):
		bad("to", "must be after from")
	}
	if !m.DeclaredAt.IsZero() && !storable(m.DeclaredAt) {
		bad("declared_at", "outside the storable range")
	}
	return errors.Join(errs...)
}

// AddMaintenance stores a window and returns its id. A zero DeclaredAt is
// stamped with the current time.
func (l *Log) AddMaintenance(ctx context.Context, m Maintenance) (int64, error) {
	if m.DeclaredAt.IsZero() {
		m.DeclaredAt = l.now()
	}
	if err := m.Validate(); err != nil {
		return 0, fmt.Errorf("sla: maintenance: %w", err)
	}
	var id int64
	err := l.db.QueryRowContext(ctx, `INSERT INTO sla_maintenance (host, vm_name, starts_at, ends_at, reason, declared_at)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		m.Host, m.VM, m.From.UnixNano(), m.To.UnixNano(), m.Reason, m.DeclaredAt.UnixNano()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("sla: add maintenance: %w", err)
	}
	return id, nil
}

// ListMaintenance returns the windows overlapping [from, to) ordered by start;
// a zero bound is open.
func (l *Log) ListMaintenance(ctx context.Context, from, to time.Time) ([]Maintenance, error) {
	q := `SELECT id, host, vm_name, starts_at, ends_at, reason, declared_at FROM sla_maintenance`
	var (
		where []string
		args  []any
	)
	if !from.IsZero() {
		where = append(where, "ends_at > ?")
		args = append(args, from.UnixNano())
	}
	if !to.IsZero() {
		where = append(where, "starts_at < ?")
		args = append(args, to.UnixNano())
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY starts_at, id"
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sla: list maintenance: %w", err)
	}
	defer rows.Close()
	var out []Maintenance
	for rows.Next() {
		var (
			m             Maintenance
			from, to, dec int64
		)
		if err := rows.Scan(&m.ID, &m.Host, &m.VM, &from, &to, &m.Reason, &dec); err != nil {
			return nil, fmt.Errorf("sla: list maintenance: %w", err)
		}
		m.From, m.To, m.DeclaredAt = time.Unix(0, from).UTC(), time.Unix(0, to).UTC(), time.Unix(0, dec).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sla: list maintenance: %w", err)
	}
	return out, nil
}

// RemoveMaintenance deletes a window; ErrNotFound if there is none with that id.
func (l *Log) RemoveMaintenance(ctx context.Context, id int64) error {
	res, err := l.db.ExecContext(ctx, `DELETE FROM sla_maintenance WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sla: remove maintenance %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sla: remove maintenance %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sla: remove maintenance %d: %w", id, ErrNotFound)
	}
	return nil
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
