package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// DefaultPath is where ferry keeps its state when neither --state nor
// FERRY_STATE says otherwise.
const DefaultPath = "/var/lib/ferry/ferry.db"

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

// Journal is the state database. Its methods are safe for concurrent use.
type Journal struct {
	db        *sql.DB
	d         dialect
	now       func() time.Time
	lease     lease
	closed    chan struct{}
	closeOnce sync.Once
}

// Open opens (creating if needed) the SQLite state file at path and brings
// its schema up to date.
func Open(ctx context.Context, path string) (*Journal, error) {
	db, err := openSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open ferry state %s: %w", ErrDatabase, path, err)
	}
	j, err := New(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return j, nil
}

// New brings the schema of an open SQLite database up to date and returns
// its journal; the caller keeps closing db.
func New(ctx context.Context, db *sql.DB) (*Journal, error) {
	j := &Journal{db: db, d: sqliteDialect{}, now: time.Now, closed: make(chan struct{})}
	if err := j.migrate(ctx); err != nil {
		return nil, err
	}
	return j, nil
}

// OpenDB opens the state file as Open does and returns its database, for
// callers that keep their own tables in it (the SLA log) or read it
// directly (tests); the caller closes it.
func OpenDB(ctx context.Context, path string) (*sql.DB, error) {
	j, err := Open(ctx, path)
	if err != nil {
		return nil, err
	}
	return j.db, nil
}

// DB is the database, for the packages that keep their own tables in it
// (the SLA event log).
func (j *Journal) DB() *sql.DB { return j.db }

// SetClock replaces the journal's clock (tests).
func (j *Journal) SetClock(now func() time.Time) { j.now = now }

func openSQLite(ctx context.Context, path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	// synchronous=FULL: in WAL mode NORMAL may lose the last commits on a
	// power cut, and a lost "committed" or "resumed" row would make recover
	// decide from a past that did not happen. journal_mode is not a
	// per-connection pragma here: see useWAL.
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate",
		path, busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if err := useWAL(ctx, db); err != nil {
		db.Close()
		return nil, err
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
		if err == nil || !(sqliteDialect{}).isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(walRetry):
		}
	}
}

// Close stops renewing this process's lease and closes the database.
func (j *Journal) Close() error {
	j.StopLease()
	return j.db.Close()
}

// StopLease stops renewing this process's lease; a process that exits
// without it simply lets its lease age.
func (j *Journal) StopLease() {
	j.closeOnce.Do(func() { close(j.closed) })
}

// dbErr wraps a database failure: the caller's words, ErrDatabase, the cause.
func dbErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrDatabase) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrDatabase, fmt.Sprintf(format, args...), err)
}
