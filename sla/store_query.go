// Reading events: filtered queries, tailing the log, lookups by id and the
// migration under way for a VM, and the scan of event rows.

package sla

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

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
	cond, args := eventConditions(f, ordered)
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
	q, args := orderAndLimit(selectEvents+cond, args, f, ordered)
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sla: query events: %w", err)
	}
	return scanEvents(rows, out)
}

// eventConditions renders the filter as a WHERE clause ("" when f selects
// everything) and its arguments.
func eventConditions(f Filter, ordered bool) (string, []any) {
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
	return whereClause(where), args
}

// whereClause joins conditions into " WHERE a AND b", or "" when there are none.
func whereClause(where []string) string {
	if len(where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(where, " AND ")
}

// orderAndLimit adds the ordering and f.Limit to query q with arguments args.
// Newest keeps the last f.Limit events but still returns them oldest first.
func orderAndLimit(q string, args []any, f Filter, ordered bool) (string, []any) {
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
	return q, args
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
