package journal

import (
	"context"
	"time"
)

// MaintenanceMark says a host is in maintenance: placement never picks it.
// Drain sets it, undrain clears it.
type MaintenanceMark struct {
	Host   string    `json:"host"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// SetMaintenance marks a host in maintenance. Setting it again keeps the
// original time and updates the reason.
func (j *Journal) SetMaintenance(ctx context.Context, host, reason string) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err, "maintenance set %s", host)
	}
	defer tx.Rollback()
	res, err := j.exec(ctx, tx, "UPDATE host_maintenance SET reason = ? WHERE host_name = ?", reason, host)
	if err != nil {
		return dbErr(err, "maintenance set %s", host)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := j.exec(ctx, tx, "INSERT INTO host_maintenance (host_name, since, reason) VALUES (?, ?, ?)", host, ms(j.now()), reason); err != nil {
			return dbErr(err, "maintenance set %s", host)
		}
	}
	return dbErr(tx.Commit(), "maintenance set %s", host)
}

// ClearMaintenance takes a host out of maintenance; it reports whether it was in.
func (j *Journal) ClearMaintenance(ctx context.Context, host string) (bool, error) {
	res, err := j.exec(ctx, j.db, "DELETE FROM host_maintenance WHERE host_name = ?", host)
	if err != nil {
		return false, dbErr(err, "maintenance clear %s", host)
	}
	n, err := res.RowsAffected()
	return n > 0, dbErr(err, "maintenance clear %s", host)
}

// Maintenance returns every host in maintenance, by name.
func (j *Journal) Maintenance(ctx context.Context) ([]MaintenanceMark, error) {
	rows, err := j.db.QueryContext(ctx, "SELECT host_name, since, reason FROM host_maintenance ORDER BY host_name")
	if err != nil {
		return nil, dbErr(err, "maintenance list")
	}
	defer rows.Close()
	var out []MaintenanceMark
	for rows.Next() {
		var mk MaintenanceMark
		var since int64
		if err := rows.Scan(&mk.Host, &since, &mk.Reason); err != nil {
			return nil, dbErr(err, "maintenance list")
		}
		mk.Since = time.UnixMilli(since)
		out = append(out, mk)
	}
	return out, dbErr(rows.Err(), "maintenance list")
}

// MaintenanceByHost is Maintenance keyed by host name.
func (j *Journal) MaintenanceByHost(ctx context.Context) (map[string]MaintenanceMark, error) {
	marks, err := j.Maintenance(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]MaintenanceMark, len(marks))
	for _, mk := range marks {
		out[mk.Host] = mk
	}
	return out, nil
}
