// Maintenance windows: declaring, listing and removing them.

package sla

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotFound is returned when a maintenance window to remove does not exist.
var ErrNotFound = errors.New("not found")

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
	q += whereClause(where) + " ORDER BY starts_at, id"
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
