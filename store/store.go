// Package store opens ferry's state database: one SQLite file (WAL) holding the
// migration journal, reservations, maintenance marks and the SLA event log.
//
// It owns the connection settings only. Each package that keeps state declares
// and migrates its own tables (CREATE TABLE IF NOT EXISTS) on the *sql.DB it is
// given, and keeps its SQL portable so the same schema can run on PostgreSQL.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"modernc.org/sqlite" // the "sqlite" driver, and its error codes
)

// DefaultPath is where ferry keeps its state when neither --state nor
// FERRY_STATE says otherwise.
const DefaultPath = "/var/lib/ferry/ferry.db"

// ErrOpen is returned when the state database cannot be opened or created.
var ErrOpen = errors.New("cannot open ferry state")

// busyTimeout lets several ferry processes share one file: a writer waits for
// another's transaction instead of failing with SQLITE_BUSY. It is long enough
// that a migration's journal write outwaits any other writer's transaction
// (the SLA import commits in batches well under it).
const busyTimeout = 30 * time.Second

// fileMode is the state file's mode, and SQLite gives its -wal and -shm files
// the same one: the journal holds domain XML and hook output, not for others.
const fileMode = 0o600

// Path resolves the state path: the flag value if set, then FERRY_STATE, then DefaultPath.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("FERRY_STATE"); env != "" {
		return env
	}
	return DefaultPath
}

// Open opens (creating if needed) the SQLite database at path.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
		}
	}
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
	}
	// synchronous=FULL: in WAL mode NORMAL may lose the last commits on a
	// power cut, and a lost "committed" or "resumed" row would make recover
	// decide from a past that did not happen. journal_mode is not a
	// per-connection pragma here: see useWAL.
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate",
		path, busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
	}
	if err := useWAL(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrOpen, path, err)
	}
	return db, nil
}

// createPrivate creates the state file with fileMode before SQLite does (it
// would use 0644 under the usual umask), and tightens an existing file ferry's
// user owns; SQLite copies the file's mode to its -wal and -shm files.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode().Perm()&^fileMode != 0 {
		if err := f.Chmod(fileMode); err != nil {
			return fmt.Errorf("make it private (mode %o): %w", fileMode, err)
		}
	}
	for _, side := range []string{"-wal", "-shm"} {
		if fi, err := os.Stat(path + side); err == nil && fi.Mode().Perm()&^fileMode != 0 {
			if err := os.Chmod(path+side, fileMode); err != nil {
				return fmt.Errorf("make %s private: %w", path+side, err)
			}
		}
	}
	return nil
}

// walRetry is the pause between attempts to switch a file to WAL.
const walRetry = 20 * time.Millisecond

// useWAL puts the file in WAL mode (persistent: once per file, a no-op
// after). Switching takes an exclusive lock, and when another process holds
// the file (one opening it at the same instant) SQLite answers SQLITE_BUSY at
// once instead of waiting busy_timeout, so that wait is done here.
func useWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(walRetry):
		}
	}
}

// sqliteBusy is SQLITE_BUSY, the primary code of every "database is locked".
const sqliteBusy = 5

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqliteBusy
}
