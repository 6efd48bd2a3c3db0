package journal

import (
	"context"
	"fmt"
	"strings"
)

// Claim makes row id the VM's one unfinished move: the check that no other
// row of the VM is unfinished and the write of the VM's UUID (with cols) into
// row id are one write transaction, so of several moves of one VM started at
// once, by any processes sharing the state, exactly one gets it. Another
// unfinished row that takeOver accepts (an interrupted cold move this one
// resumes) is closed as resumed in the same transaction and returned; any
// other makes Claim fail with a *ClaimError naming it, having changed nothing.
func (j *Journal) Claim(ctx context.Context, id, uuid string, cols map[string]any, takeOver func(r *Record, ownerAlive bool) bool) (*Record, error) {
	if uuid == "" {
		return nil, fmt.Errorf("journal claim %s: no VM UUID", id)
	}
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbErr(err, "journal claim")
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, j.d.rebind("SELECT "+selectCols+" FROM migrations WHERE vm_uuid = ? AND state IN (?, ?) AND id <> ? ORDER BY started_at"),
		uuid, StateRunning, StateFailed, id)
	if err != nil {
		return nil, dbErr(err, "journal claim")
	}
	open, err := scanRecords(rows)
	if err != nil {
		return nil, dbErr(err, "journal claim")
	}
	var taken *Record
	now := ms(j.now())
	for _, r := range open {
		alive, err := j.ownerAlive(ctx, tx, r.Owner)
		if err != nil {
			return nil, err
		}
		if taken == nil && takeOver != nil && takeOver(r, alive) {
			if _, err := j.exec(ctx, tx, "UPDATE migrations SET state = ?, finished_at = ?, notes = ?, updated_at = ? WHERE id = ?",
				StateResumed, now, "its copies were taken over by "+id, now, r.ID); err != nil {
				return nil, dbErr(err, "journal claim")
			}
			taken = r
			continue
		}
		return nil, &ClaimError{Holder: r, Alive: alive}
	}
	sets, args, err := setClause(cols)
	if err != nil {
		return nil, err
	}
	sets, args = append([]string{"vm_uuid = ?"}, sets...), append([]any{uuid}, args...)
	args = append(args, now, id)
	if _, err := j.exec(ctx, tx, "UPDATE migrations SET "+strings.Join(sets, ", ")+", updated_at = ? WHERE id = ?", args...); err != nil {
		return nil, dbErr(err, "journal claim %s", id)
	}
	if err := tx.Commit(); err != nil {
		return nil, dbErr(err, "journal claim %s", id)
	}
	return taken, nil
}
