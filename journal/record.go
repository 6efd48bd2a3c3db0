package journal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Stage numbers a move's six journaled steps (DESIGN.md §2). A row records
// when it reached each; kinds name them for what they do (StageName).
type Stage int

// The six stages, by their live-migration names.
const (
	StagePreMigration Stage = iota
	StageReservation
	StagePreCopy
	StageStopAndCopy
	StageCommitment
	StageActivation
)

// Row kinds.
const (
	KindLive = "live"
	KindCold = "cold"
)

var stageNames = map[string][6]string{
	KindLive: {"pre-migration", "reservation", "pre-copy", "stop-and-copy", "commitment", "activation"},
	// A cold move: checks, space reserved, artifacts copied and verified,
	// the destination's definition made and verified, the source being
	// removed (no rollback from here), done.
	KindCold: {"checks", "reservation", "copy", "defined", "commitment", "done"},
}

func (s Stage) String() string { return StageName(KindLive, s) }

// StageName is stage s as moves of kind call it.
func StageName(kind string, s Stage) string {
	names, ok := stageNames[kind]
	if !ok {
		names = stageNames[KindLive]
	}
	if s < 0 || int(s) >= len(names) {
		return fmt.Sprintf("stage-%d", int(s))
	}
	return names[s]
}

// Row states.
const (
	StateRunning    = "running"
	StateCompleted  = "completed"
	StateRefused    = "refused"
	StateRolledBack = "rolled_back"
	StateFailed     = "failed" // could not be made consistent: recover must finish it
	// StateResumed closes a cold row whose copies a later run took over.
	StateResumed = "resumed"
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

// Unfinished reports a row recover still has to look at.
func (r *Record) Unfinished() bool { return r.State == StateRunning || r.State == StateFailed }

var stageColumns = [...]string{"t_premigration", "t_reservation", "t_precopy", "t_stopcopy", "t_commitment", "t_activation"}

// StageColumn is the column holding stage s's time, for Update.
func StageColumn(s Stage) string { return stageColumns[s] }

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

func ms(t time.Time) int64 { return t.UnixMilli() }

func (j *Journal) exec(ctx context.Context, q querier, query string, args ...any) (sql.Result, error) {
	return q.ExecContext(ctx, j.d.rebind(query), args...)
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

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
	_, err := j.exec(ctx, j.db, `INSERT INTO migrations
		(id, kind, vm_name, vm_uuid, src_name, src_uri, dst_name, dst_uri, state, stage, t_premigration, started_at, options, owner, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)`,
		r.ID, r.Kind, r.VM, r.VMUUID, r.Source, r.SourceURI, r.Dest, r.DestURI, r.State,
		ms(r.StartedAt), ms(r.StartedAt), r.Options, r.Owner, ms(now))
	return dbErr(err, "journal create %s", r.ID)
}

// setClause turns columns into "a = ?, b = ?" and their values; times
// become milliseconds.
func setClause(cols map[string]any) ([]string, []any, error) {
	var sets []string
	var args []any
	for k, v := range cols {
		if !validColumn(k) {
			return nil, nil, fmt.Errorf("journal: unknown column %q", k)
		}
		if t, ok := v.(time.Time); ok {
			v = ms(t)
		}
		sets = append(sets, k+" = ?")
		args = append(args, v)
	}
	return sets, args, nil
}

// Update sets columns on a row. Keys are column names from the schema.
func (j *Journal) Update(ctx context.Context, id string, cols map[string]any) error {
	if len(cols) == 0 {
		return nil
	}
	sets, args, err := setClause(cols)
	if err != nil {
		return err
	}
	sets = append(sets, "updated_at = ?")
	args = append(args, ms(j.now()), id)
	_, err = j.exec(ctx, j.db, "UPDATE migrations SET "+strings.Join(sets, ", ")+" WHERE id = ?", args...)
	return dbErr(err, "journal update %s", id)
}

// EnterStage records that a move reached a stage.
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
	r.StageName = StageName(r.Kind, r.Stage)
	r.StartedAt = time.UnixMilli(started)
	r.Stages = map[string]string{}
	for i, v := range st {
		if v.Valid {
			t := time.UnixMilli(v.Int64)
			r.StageTimes[i] = &t
			r.Stages[StageName(r.Kind, Stage(i))] = t.Format(time.RFC3339Nano)
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

// scanRecords reads every row of a query.
func scanRecords(rows *sql.Rows) ([]*Record, error) {
	defer rows.Close()
	var out []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Get returns one row by id or unique id prefix.
func (j *Journal) Get(ctx context.Context, id string) (*Record, error) {
	rows, err := j.db.QueryContext(ctx, j.d.rebind("SELECT "+selectCols+" FROM migrations WHERE id = ? OR id LIKE ? ORDER BY started_at LIMIT 2"), id, id+"%")
	if err != nil {
		return nil, dbErr(err, "journal get")
	}
	out, err := scanRecords(rows)
	if err != nil {
		return nil, dbErr(err, "journal get")
	}
	for _, r := range out {
		if r.ID == id {
			return r, nil
		}
	}
	switch len(out) {
	case 0:
		return nil, fmt.Errorf("%w: %q", ErrNoRecord, id)
	case 1:
		return out[0], nil
	}
	return nil, fmt.Errorf("%w: %q, give more of the id", ErrAmbiguousID, id)
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
	rows, err := j.db.QueryContext(ctx, j.d.rebind(q), args...)
	if err != nil {
		return nil, dbErr(err, "journal list")
	}
	out, err := scanRecords(rows)
	return out, dbErr(err, "journal list")
}

// Unfinished lists the rows recover has to look at (running and failed),
// newest first.
func (j *Journal) Unfinished(ctx context.Context) ([]*Record, error) {
	var out []*Record
	for _, st := range []string{StateRunning, StateFailed} {
		rows, err := j.List(ctx, ListFilter{State: st})
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// OpenForVM returns the unfinished move of a VM, if any.
func (j *Journal) OpenForVM(ctx context.Context, uuid string) (*Record, error) {
	row := j.db.QueryRowContext(ctx, j.d.rebind("SELECT "+selectCols+" FROM migrations WHERE vm_uuid = ? AND state IN (?, ?) ORDER BY started_at DESC LIMIT 1"), uuid, StateRunning, StateFailed)
	r, err := scanRecord(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, dbErr(err, "journal: open move of %s", uuid)
}
