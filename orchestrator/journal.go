package orchestrator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Stage numbers a live migration's transaction steps (DESIGN.md §2).
type Stage int

// The six stages.
const (
	StagePreMigration Stage = iota
	StageReservation
	StagePreCopy
	StageStopAndCopy
	StageCommitment
	StageActivation
)

var stageNames = [...]string{"pre-migration", "reservation", "pre-copy", "stop-and-copy", "commitment", "activation"}

func (s Stage) String() string {
	if s < 0 || int(s) >= len(stageNames) {
		return fmt.Sprintf("stage-%d", int(s))
	}
	return stageNames[s]
}

// Journal states.
const (
	StateRunning    = "running"
	StateCompleted  = "completed"
	StateRefused    = "refused"
	StateRolledBack = "rolled_back"
	StateFailed     = "failed" // could not be made consistent: recover must finish it
)

// Record is one journal row.
type Record struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"`
	VM          string            `json:"vm"`
	VMUUID      string            `json:"vm_uuid,omitempty"`
	Source      string            `json:"source,omitempty"`
	SourceURI   string            `json:"source_uri,omitempty"`
	Dest        string            `json:"destination,omitempty"`
	DestURI     string            `json:"destination_uri,omitempty"`
	State       string            `json:"state"`
	Stage       Stage             `json:"-"`
	StageName   string            `json:"stage"`
	StageTimes  [6]*time.Time     `json:"-"`
	Stages      map[string]string `json:"stage_times,omitempty"`
	StartedAt   time.Time         `json:"started_at"`
	FinishedAt  *time.Time        `json:"finished_at,omitempty"`
	MemoryBytes uint64            `json:"memory_bytes,omitempty"`
	DataTotal   uint64            `json:"data_total_bytes,omitempty"`
	DataSent    uint64            `json:"data_sent_bytes,omitempty"`
	Iterations  int               `json:"iterations,omitempty"`
	DowntimeMS  *int64            `json:"downtime_ms,omitempty"`
	Options     string            `json:"options,omitempty"`
	Error       string            `json:"error,omitempty"`
	Notes       string            `json:"notes,omitempty"`
	Owner       string            `json:"owner,omitempty"`
	Policy      json.RawMessage   `json:"policy,omitempty"`
	VMXML       string            `json:"-"`
}

// Journal is the migration journal and reservation ledger in the state DB.
type Journal struct {
	db        *sql.DB
	now       func() time.Time
	lease     lease
	closed    chan struct{}
	closeOnce sync.Once
}

const schema = `
CREATE TABLE IF NOT EXISTS migrations (
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
);
CREATE INDEX IF NOT EXISTS migrations_state ON migrations(state);
CREATE INDEX IF NOT EXISTS migrations_vm ON migrations(vm_uuid);
CREATE TABLE IF NOT EXISTS reservations (
	migration_id TEXT PRIMARY KEY,
	host_key TEXT NOT NULL,
	host_name TEXT NOT NULL,
	memory_bytes INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	released_at INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_open ON reservations(host_key, released_at);
CREATE TABLE IF NOT EXISTS move_slots (
	migration_id TEXT PRIMARY KEY,
	src_key TEXT NOT NULL,
	src_name TEXT NOT NULL,
	dst_key TEXT NOT NULL,
	dst_name TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	released_at INTEGER
);
CREATE INDEX IF NOT EXISTS move_slots_open ON move_slots(released_at);
CREATE TABLE IF NOT EXISTS owner_leases (
	owner TEXT PRIMARY KEY,
	machine TEXT NOT NULL,
	pid INTEGER NOT NULL,
	renewed_at INTEGER NOT NULL
);
`

// openClaimIndex: at most one unfinished (running or failed) row per VM.
const openClaimIndex = `CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_open ON migrations(vm_uuid)
	WHERE vm_uuid <> '' AND state IN ('running', 'failed')`

var stageColumns = [...]string{"t_premigration", "t_reservation", "t_precopy", "t_stopcopy", "t_commitment", "t_activation"}

// OpenJournal creates the journal tables if needed.
func OpenJournal(ctx context.Context, db *sql.DB) (*Journal, error) {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("journal schema: %w", err)
	}
	// A unique index makes "one unfinished move per VM" hold for every
	// process and engine; Claim checks first to name the winner. A state
	// file that already holds duplicates (written before it existed) keeps
	// working on Claim's check alone.
	_, _ = db.ExecContext(ctx, openClaimIndex)
	return &Journal{db: db, now: time.Now, closed: make(chan struct{})}, nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// Create writes a new row in state running at stage 0.
func (j *Journal) Create(ctx context.Context, r *Record) error {
	if OwnedHere(r.Owner) {
		// The lease first: no row may name an owner other machines cannot check.
		if _, err := j.Owner(ctx); err != nil {
			return err
		}
	}
	now := j.now()
	if r.StartedAt.IsZero() {
		r.StartedAt = now
	}
	_, err := j.db.ExecContext(ctx, `INSERT INTO migrations
		(id, kind, vm_name, vm_uuid, src_name, src_uri, dst_name, dst_uri, state, stage, t_premigration, started_at, options, owner, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
		r.ID, r.Kind, r.VM, r.VMUUID, r.Source, r.SourceURI, r.Dest, r.DestURI, r.State,
		ms(r.StartedAt), ms(r.StartedAt), r.Options, r.Owner, ms(now))
	if err != nil {
		return fmt.Errorf("journal create %s: %w", r.ID, err)
	}
	return nil
}

// Update sets columns on a row. Keys are column names from the schema.
func (j *Journal) Update(ctx context.Context, id string, cols map[string]any) error {
	if len(cols) == 0 {
		return nil
	}
	var sets []string
	var args []any
	for k, v := range cols {
		if !validColumn(k) {
			return fmt.Errorf("journal update: unknown column %q", k)
		}
		if t, ok := v.(time.Time); ok {
			v = ms(t)
		}
		sets = append(sets, k+" = ?")
		args = append(args, v)
	}
	sets = append(sets, "updated_at = ?")
	args = append(args, ms(j.now()), id)
	_, err := j.db.ExecContext(ctx, "UPDATE migrations SET "+strings.Join(sets, ", ")+" WHERE id = ?", args...)
	if err != nil {
		return fmt.Errorf("journal update %s: %w", id, err)
	}
	return nil
}

var columns = map[string]bool{
	"vm_name": true, "vm_uuid": true, "src_name": true, "src_uri": true, "dst_name": true, "dst_uri": true,
	"state": true, "stage": true, "finished_at": true, "memory_bytes": true, "data_total": true, "data_sent": true,
	"iterations": true, "downtime_ms": true, "options": true, "vm_xml": true, "error": true, "notes": true, "owner": true, "policy": true,
}

func validColumn(k string) bool {
	if columns[k] {
		return true
	}
	for _, c := range stageColumns {
		if c == k {
			return true
		}
	}
	return false
}

// EnterStage records that a migration reached a stage.
func (j *Journal) EnterStage(ctx context.Context, id string, s Stage, at time.Time, more map[string]any) error {
	cols := map[string]any{"stage": int(s), stageColumns[s]: at}
	for k, v := range more {
		cols[k] = v
	}
	return j.Update(ctx, id, cols)
}

// Finish records a terminal state.
func (j *Journal) Finish(ctx context.Context, id, state, errText string, more map[string]any) error {
	cols := map[string]any{"state": state, "finished_at": j.now(), "error": errText}
	for k, v := range more {
		cols[k] = v
	}
	return j.Update(ctx, id, cols)
}

// ErrNoRecord: no journal row with that id.
var ErrNoRecord = errors.New("no such migration in the journal")

const selectCols = `id, kind, vm_name, vm_uuid, src_name, src_uri, dst_name, dst_uri, state, stage,
	t_premigration, t_reservation, t_precopy, t_stopcopy, t_commitment, t_activation,
	started_at, finished_at, memory_bytes, data_total, data_sent, iterations, downtime_ms,
	options, vm_xml, error, notes, owner, policy`

func scanRecord(sc interface{ Scan(...any) error }) (*Record, error) {
	var r Record
	var st [6]sql.NullInt64
	var started int64
	var finished, downtime sql.NullInt64
	var stage int
	var policy string
	err := sc.Scan(&r.ID, &r.Kind, &r.VM, &r.VMUUID, &r.Source, &r.SourceURI, &r.Dest, &r.DestURI, &r.State, &stage,
		&st[0], &st[1], &st[2], &st[3], &st[4], &st[5], &started, &finished,
		&r.MemoryBytes, &r.DataTotal, &r.DataSent, &r.Iterations, &downtime,
		&r.Options, &r.VMXML, &r.Error, &r.Notes, &r.Owner, &policy)
	if err != nil {
		return nil, err
	}
	r.Stage = Stage(stage)
	if policy != "" {
		r.Policy = json.RawMessage(policy)
	}
	r.StageName = r.Stage.String()
	r.StartedAt = time.UnixMilli(started)
	r.Stages = map[string]string{}
	for i, v := range st {
		if v.Valid {
			t := time.UnixMilli(v.Int64)
			r.StageTimes[i] = &t
			r.Stages[Stage(i).String()] = t.Format(time.RFC3339Nano)
		}
	}
	if finished.Valid {
		t := time.UnixMilli(finished.Int64)
		r.FinishedAt = &t
	}
	if downtime.Valid {
		d := downtime.Int64
		r.DowntimeMS = &d
	}
	return &r, nil
}

// Get returns one row by id or unique id prefix.
func (j *Journal) Get(ctx context.Context, id string) (*Record, error) {
	rows, err := j.db.QueryContext(ctx, "SELECT "+selectCols+" FROM migrations WHERE id = ? OR id LIKE ? ORDER BY started_at LIMIT 2", id, id+"%")
	if err != nil {
		return nil, fmt.Errorf("journal get: %w", err)
	}
	defer rows.Close()
	var out []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("journal get: %w", err)
		}
		if r.ID == id {
			return r, nil
		}
		out = append(out, r)
	}
	switch len(out) {
	case 0:
		return nil, fmt.Errorf("%w: %q", ErrNoRecord, id)
	case 1:
		return out[0], rows.Err()
	}
	return nil, fmt.Errorf("%w: %q matches several migrations, give more of the id", ErrInvalidRequest, id)
}

// ListFilter selects journal rows.
type ListFilter struct {
	VM    string
	State string
	Limit int
}

// List returns rows, newest first.
func (j *Journal) List(ctx context.Context, f ListFilter) ([]*Record, error) {
	q := "SELECT " + selectCols + " FROM migrations WHERE 1=1"
	var args []any
	if f.VM != "" {
		q += " AND (vm_name = ? OR vm_uuid = ?)"
		args = append(args, f.VM, f.VM)
	}
	if f.State != "" {
		q += " AND state = ?"
		args = append(args, f.State)
	}
	q += " ORDER BY started_at DESC, id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := j.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("journal list: %w", err)
	}
	defer rows.Close()
	var out []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("journal list: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// OpenForVM returns the unfinished migration of a VM, if any.
func (j *Journal) OpenForVM(ctx context.Context, uuid string) (*Record, error) {
	row := j.db.QueryRowContext(ctx, "SELECT "+selectCols+" FROM migrations WHERE vm_uuid = ? AND state IN (?, ?) ORDER BY started_at DESC LIMIT 1", uuid, StateRunning, StateFailed)
	r, err := scanRecord(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// Claim makes row id the VM's one unfinished move: the check that no other
// row of the VM is unfinished and the write of the VM's UUID (with cols) into
// row id are one write transaction, so of several moves of one VM started at
// once, by any processes sharing the state, exactly one gets it. Another
// unfinished row that takeOver accepts (an interrupted cold move this one
// resumes) is closed as resumed in the same transaction and returned; any
// other makes Claim refuse with ErrBusy naming it, having changed nothing.
func (j *Journal) Claim(ctx context.Context, id, uuid string, cols map[string]any, takeOver func(r *Record, ownerAlive bool) bool) (*Record, error) {
	if uuid == "" {
		return nil, fmt.Errorf("journal claim %s: no VM UUID", id)
	}
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("journal claim: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT "+selectCols+" FROM migrations WHERE vm_uuid = ? AND state IN (?, ?) AND id <> ? ORDER BY started_at",
		uuid, StateRunning, StateFailed, id)
	if err != nil {
		return nil, fmt.Errorf("journal claim: %w", err)
	}
	var open []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("journal claim: %w", err)
		}
		open = append(open, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal claim: %w", err)
	}
	var taken *Record
	now := ms(j.now())
	for _, r := range open {
		alive, err := j.ownerAlive(ctx, tx, r.Owner)
		if err != nil {
			return nil, fmt.Errorf("journal claim: %w", err)
		}
		if taken == nil && takeOver != nil && takeOver(r, alive) {
			if _, err := tx.ExecContext(ctx, "UPDATE migrations SET state = ?, finished_at = ?, notes = ?, updated_at = ? WHERE id = ?",
				StateResumed, now, "its copies were taken over by "+id, now, r.ID); err != nil {
				return nil, fmt.Errorf("journal claim: %w", err)
			}
			taken = r
			continue
		}
		return nil, busyWith(r, alive)
	}
	sets, args := []string{"vm_uuid = ?"}, []any{uuid}
	for k, v := range cols {
		if !validColumn(k) {
			return nil, fmt.Errorf("journal claim: unknown column %q", k)
		}
		sets, args = append(sets, k+" = ?"), append(args, v)
	}
	args = append(args, now, id)
	if _, err := tx.ExecContext(ctx, "UPDATE migrations SET "+strings.Join(sets, ", ")+", updated_at = ? WHERE id = ?", args...); err != nil {
		return nil, fmt.Errorf("journal claim %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("journal claim %s: %w", id, err)
	}
	return taken, nil
}

// busyWith is the refusal of a move whose VM another unfinished row holds.
func busyWith(r *Record, alive bool) error {
	what := fmt.Sprintf("%s move %s (%s → %s, %s, stage %s, started %s by %s",
		r.Kind, r.ID, r.Source, r.Dest, r.State, r.Stage, r.StartedAt.Local().Format("15:04:05"), describeOwner(r.Owner))
	if alive {
		return refuse(ErrBusy, nil, "VM %s is already being moved by %s, still running); wait for it to finish (ferry show %s)", r.VM, what, r.ID)
	}
	return refuse(ErrBusy, nil, "VM %s has an unfinished %s, which is gone); run `ferry recover %s` first", r.VM, what, r.ID)
}

// Reserve records a memory reservation on a host if it fits: the check and
// the insert run in one write transaction, so two migrations racing for a
// host's last free memory cannot both get it (across processes too).
func (j *Journal) Reserve(ctx context.Context, migrationID, hostKey, hostName string, bytes, availableBytes uint64) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	defer tx.Rollback()
	var reserved int64
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(SUM(memory_bytes), 0) FROM reservations WHERE host_key = ? AND released_at IS NULL", hostKey).Scan(&reserved); err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	if uint64(reserved)+bytes > availableBytes {
		left := int64(availableBytes) - reserved
		if left < 0 {
			left = 0
		}
		return refuse(ErrInsufficientMemory, nil, "not enough free memory on %s: the VM needs %s, %s is available after the host reserve and %s held by migrations in flight",
			hostName, mib(bytes), mib(uint64(left)), mib(uint64(reserved)))
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO reservations (migration_id, host_key, host_name, memory_bytes, created_at) VALUES (?, ?, ?, ?, ?)",
		migrationID, hostKey, hostName, int64(bytes), ms(j.now())); err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	return tx.Commit()
}

// Release frees a migration's reservations and its move slot (idempotent).
func (j *Journal) Release(ctx context.Context, migrationID string) error {
	now := ms(j.now())
	if _, err := j.db.ExecContext(ctx, "UPDATE reservations SET released_at = ? WHERE migration_id = ? AND released_at IS NULL", now, migrationID); err != nil {
		return fmt.Errorf("release reservation: %w", err)
	}
	if _, err := j.db.ExecContext(ctx, "UPDATE move_slots SET released_at = ? WHERE migration_id = ? AND released_at IS NULL", now, migrationID); err != nil {
		return fmt.Errorf("release move slot: %w", err)
	}
	return nil
}

// Limits bound the moves in flight per host, across every ferry process
// sharing the state database; 0 means no limit.
type Limits struct {
	MaxIncoming int `yaml:"max_incoming,omitempty" json:"max_incoming,omitempty"`
	MaxOutgoing int `yaml:"max_outgoing,omitempty" json:"max_outgoing,omitempty"`
}

// SlotHost names a host in the slot ledger: its libvirt host UUID (so two
// names of one host count together) and a name for messages.
type SlotHost struct{ Key, Name string }

// AcquireSlot takes a move slot from src to dst if the limits allow: the
// counts and the insert run in one write transaction, so concurrent ferry
// processes cannot overshoot. Otherwise it refuses with ErrLimit.
func (j *Journal) AcquireSlot(ctx context.Context, migrationID string, src, dst SlotHost, lim Limits) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("move slot: %w", err)
	}
	defer tx.Rollback()
	check := func(col string, h SlotHost, max int, dir string) error {
		if max <= 0 {
			return nil
		}
		n, err := j.openSlots(ctx, tx, col, h.Key)
		if err != nil {
			return fmt.Errorf("move slot: %w", err)
		}
		if n >= max {
			return refuse(ErrLimit, nil, "%s already has %d %s move(s) in flight (limit %d)", h.Name, n, dir, max)
		}
		return nil
	}
	if err := check("dst_key", dst, lim.MaxIncoming, "incoming"); err != nil {
		return err
	}
	if err := check("src_key", src, lim.MaxOutgoing, "outgoing"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO move_slots (migration_id, src_key, src_name, dst_key, dst_name, created_at) VALUES (?, ?, ?, ?, ?, ?)",
		migrationID, src.Key, src.Name, dst.Key, dst.Name, ms(j.now())); err != nil {
		return fmt.Errorf("move slot: %w", err)
	}
	return tx.Commit()
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// openSlots counts the open slots with col (dst_key or src_key) = key. A
// slot whose migration's ferry process is known to be dead is not counted:
// a crash must not block every later move until someone runs recover (the
// journal row still waits for recover, and its memory stays reserved).
func (j *Journal) openSlots(ctx context.Context, q querier, col, key string) (int, error) {
	rows, err := q.QueryContext(ctx, `SELECT COALESCE(m.owner, '') FROM move_slots s LEFT JOIN migrations m ON m.id = s.migration_id
		WHERE s.`+col+` = ? AND s.released_at IS NULL`, key)
	if err != nil {
		return 0, err
	}
	var owners []string
	for rows.Next() {
		var owner string
		if err := rows.Scan(&owner); err != nil {
			rows.Close()
			return 0, err
		}
		owners = append(owners, owner)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, owner := range owners {
		alive := owner == ""
		if !alive {
			if alive, err = j.ownerAlive(ctx, q, owner); err != nil {
				return 0, err
			}
		}
		if alive {
			n++
		}
	}
	return n, nil
}

// InFlight counts the open move slots into (incoming) and out of (outgoing)
// a host, by host key.
func (j *Journal) InFlight(ctx context.Context, key string) (incoming, outgoing int, err error) {
	if incoming, err = j.openSlots(ctx, j.db, "dst_key", key); err != nil {
		return 0, 0, err
	}
	outgoing, err = j.openSlots(ctx, j.db, "src_key", key)
	return incoming, outgoing, err
}

// Reserved sums the open reservations on a host.
func (j *Journal) Reserved(ctx context.Context, hostKey string) (uint64, error) {
	var n int64
	err := j.db.QueryRowContext(ctx, "SELECT COALESCE(SUM(memory_bytes), 0) FROM reservations WHERE host_key = ? AND released_at IS NULL", hostKey).Scan(&n)
	return uint64(n), err
}

func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
