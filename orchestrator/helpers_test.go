package orchestrator

import (
	"context"
	"testing"

	"github.com/ferryvm/ferry/journal"
)

// openTestJournal opens a state file for one test and closes it after.
func openTestJournal(t *testing.T, path string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}
