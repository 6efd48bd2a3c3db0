package orchestrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// MaintenanceMark says a host is in maintenance: placement never picks it.
// Drain sets it, undrain clears it.
type MaintenanceMark struct {
	Host   string    `json:"host"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Maintenance is the persisted set of hosts in maintenance, in the state DB
// shared by every ferry process.
type Maintenance struct {
	db  *sql.DB
	now func() time.Time
}

const maintenanceSchema = `
CREATE TABLE IF NOT EXISTS host_maintenance (
	host_name TEXT PRIMARY KEY,
	since INTEGER NOT NULL,
	reason TEXT NOT NULL DEFAULT ''
);
`

// OpenMaintenance creates the maintenance table if needed.
func OpenMaintenance(ctx context.Context, db *sql.DB) (*Maintenance, error) {
	if _, err := db.ExecContext(ctx, maintenanceSchema); err != nil {
		return nil, fmt.Errorf("maintenance schema: %w", err)
	}
	return &Maintenance{db: db, now: time.Now}, nil
}

// Set marks a host in maintenance. Setting it again keeps the original
// time and updates the reason.
func (m *Maintenance) Set(ctx context.Context, host, reason string) error {
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("maintenance set %s: %w", host, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "UPDATE host_maintenance SET reason = ? WHERE host_name = ?", reason, host)
	if err != nil {
		return fmt.Errorf("maintenance set %s: %w", host, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO host_maintenance (host_name, since, reason) VALUES (?, ?, ?)", host, ms(m.now()), reason); err != nil {
			return fmt.Errorf("maintenance set %s: %w", host, err)
		}
	}
	return tx.Commit()
}

// Clear takes a host out of maintenance; it reports whether it was in.
func (m *Maintenance) Clear(ctx context.Context, host string) (bool, error) {
	res, err := m.db.ExecContext(ctx, "DELETE FROM host_maintenance WHERE host_name = ?", host)
	if err != nil {
		return false, fmt.Errorf("maintenance clear %s: %w", host, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// List returns every host in maintenance, by name.
func (m *Maintenance) List(ctx context.Context) ([]MaintenanceMark, error) {
	rows, err := m.db.QueryContext(ctx, "SELECT host_name, since, reason FROM host_maintenance ORDER BY host_name")
	if err != nil {
		return nil, fmt.Errorf("maintenance list: %w", err)
	}
	defer rows.Close()
	var out []MaintenanceMark
	for rows.Next() {
		var mk MaintenanceMark
		var since int64
		if err := rows.Scan(&mk.Host, &since, &mk.Reason); err != nil {
			return nil, fmt.Errorf("maintenance list: %w", err)
		}
		mk.Since = time.UnixMilli(since)
		out = append(out, mk)
	}
	return out, rows.Err()
}

// Maintenance opens the maintenance marks of the controller's state database.
func (c *Controller) Maintenance(ctx context.Context) (*Maintenance, error) {
	if c.Journal == nil {
		return nil, errors.New("maintenance: the controller has no journal")
	}
	return OpenMaintenance(ctx, c.Journal.db)
}
