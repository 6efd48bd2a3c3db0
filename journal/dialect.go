package journal

import (
	"errors"

	"modernc.org/sqlite"
)

// dialect is what differs between database engines for the same queries:
// every query is written with ? placeholders and passes through rebind.
type dialect interface {
	// rebind turns ? placeholders into the engine's own.
	rebind(query string) string
	// isBusy reports a lock the engine gave up waiting for.
	isBusy(err error) bool
}

type sqliteDialect struct{}

func (sqliteDialect) rebind(q string) string { return q }

// sqliteBusy is SQLITE_BUSY, the primary code of every "database is locked".
const sqliteBusy = 5

func (sqliteDialect) isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqliteBusy
}
