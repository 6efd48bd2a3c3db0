package journal

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Several processes opening one fresh state file at once (a drain and a
// --status poller, say) must all get it: switching a new file to WAL takes an
// exclusive lock that SQLite refuses at once, not after busy_timeout.
func TestConcurrentOpenOfAFreshFile(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("ferry-%d.db", round))
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db, err := Open(context.Background(), path)
				if err != nil {
					errs <- err
					return
				}
				defer db.Close()
				if _, err := db.DB().Exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)"); err != nil {
					errs <- fmt.Errorf("schema: %w", err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
