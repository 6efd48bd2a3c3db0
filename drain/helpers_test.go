package drain

import (
	"context"
	"testing"

	"github.com/ferryvm/ferry/journal"
)

const (
	uriA = "qemu+tcp://127.0.10.1/system"
	uriB = "qemu+tcp://127.0.10.2/system"
	uriC = "qemu+tcp://127.0.10.3/system"
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
