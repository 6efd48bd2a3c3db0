package journal

import (
	"context"
)

// Reserve records a reservation of bytes on a host if it fits in
// availableBytes with the open ones: the check and the insert run in one
// write transaction, so two moves racing for a host's last free memory (or
// disk space) cannot both get it, across processes too. A reservation that
// does not fit fails with a *NoRoomError.
func (j *Journal) Reserve(ctx context.Context, migrationID, hostKey, hostName string, bytes, availableBytes uint64) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err, "reserve")
	}
	defer tx.Rollback()
	var reserved int64
	if err := tx.QueryRowContext(ctx, j.d.rebind("SELECT COALESCE(SUM(memory_bytes), 0) FROM reservations WHERE host_key = ? AND released_at IS NULL"), hostKey).Scan(&reserved); err != nil {
		return dbErr(err, "reserve")
	}
	if uint64(reserved)+bytes > availableBytes {
		return &NoRoomError{HostName: hostName, Need: bytes, Available: availableBytes, Held: uint64(reserved)}
	}
	if _, err := j.exec(ctx, tx, "INSERT INTO reservations (migration_id, host_key, host_name, memory_bytes, created_at) VALUES (?, ?, ?, ?, ?)",
		migrationID, hostKey, hostName, int64(bytes), ms(j.now())); err != nil {
		return dbErr(err, "reserve")
	}
	return dbErr(tx.Commit(), "reserve")
}

// Release frees a move's reservations and its move slot (idempotent).
func (j *Journal) Release(ctx context.Context, migrationID string) error {
	now := ms(j.now())
	if _, err := j.exec(ctx, j.db, "UPDATE reservations SET released_at = ? WHERE migration_id = ? AND released_at IS NULL", now, migrationID); err != nil {
		return dbErr(err, "release reservation")
	}
	_, err := j.exec(ctx, j.db, "UPDATE move_slots SET released_at = ? WHERE migration_id = ? AND released_at IS NULL", now, migrationID)
	return dbErr(err, "release move slot")
}

// Reserved sums the open reservations on a host.
func (j *Journal) Reserved(ctx context.Context, hostKey string) (uint64, error) {
	var n int64
	err := j.db.QueryRowContext(ctx, j.d.rebind("SELECT COALESCE(SUM(memory_bytes), 0) FROM reservations WHERE host_key = ? AND released_at IS NULL"), hostKey).Scan(&n)
	return uint64(n), dbErr(err, "reservations")
}

// SlotHost names a host in the slot ledger: its libvirt host UUID (so two
// names of one host count together) and a name for messages.
type SlotHost struct{ Key, Name string }

// AcquireSlot takes a move slot from src to dst if at most maxIncoming moves
// go into dst and maxOutgoing out of src (0: no limit): the counts and the
// insert run in one write transaction, so concurrent ferry processes cannot
// overshoot. Otherwise it fails with a *LimitError.
func (j *Journal) AcquireSlot(ctx context.Context, migrationID string, src, dst SlotHost, maxIncoming, maxOutgoing int) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err, "move slot")
	}
	defer tx.Rollback()
	check := func(col string, h SlotHost, max int, dir string) error {
		if max <= 0 {
			return nil
		}
		n, err := j.openSlots(ctx, tx, col, h.Key)
		if err != nil {
			return err
		}
		if n >= max {
			return &LimitError{Host: h.Name, InFlight: n, Limit: max, Direction: dir}
		}
		return nil
	}
	if err := check("dst_key", dst, maxIncoming, "incoming"); err != nil {
		return err
	}
	if err := check("src_key", src, maxOutgoing, "outgoing"); err != nil {
		return err
	}
	if _, err := j.exec(ctx, tx, "INSERT INTO move_slots (migration_id, src_key, src_name, dst_key, dst_name, created_at) VALUES (?, ?, ?, ?, ?, ?)",
		migrationID, src.Key, src.Name, dst.Key, dst.Name, ms(j.now())); err != nil {
		return dbErr(err, "move slot")
	}
	return dbErr(tx.Commit(), "move slot")
}

// openSlots counts the open slots with col (dst_key or src_key) = key. A
// slot whose move's ferry process is known to be dead is not counted: a
// crash must not block every later move until someone runs recover (the
// journal row still waits for recover, and its memory stays reserved).
func (j *Journal) openSlots(ctx context.Context, q querier, col, key string) (int, error) {
	rows, err := q.QueryContext(ctx, j.d.rebind(`SELECT COALESCE(m.owner, '') FROM move_slots s LEFT JOIN migrations m ON m.id = s.migration_id
		WHERE s.`+col+` = ? AND s.released_at IS NULL`), key)
	if err != nil {
		return 0, dbErr(err, "move slots")
	}
	var owners []string
	for rows.Next() {
		var owner string
		if err := rows.Scan(&owner); err != nil {
			rows.Close()
			return 0, dbErr(err, "move slots")
		}
		owners = append(owners, owner)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, dbErr(err, "move slots")
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
