package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferryvm/ferry/store"
)

func openTestJournal(t *testing.T, path string) *Journal {
	t.Helper()
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	j, err := OpenJournal(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// Two ferry processes (two connections to one file) race for the last free
// memory of a host: exactly one reservation may succeed.
func TestReserveRaceAcrossConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	journals := []*Journal{openTestJournal(t, path), openTestJournal(t, path)}
	const vm = 512 << 20
	const avail = 700 << 20 // room for one VM, not two
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range journals {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = journals[i].Reserve(context.Background(), fmt.Sprintf("m-%d-%d", round, i), fmt.Sprintf("host-%d", round), "host-b", vm, avail)
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrInsufficientMemory) || !errors.Is(err, ErrRefused):
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d reservations succeeded, want exactly 1 (%v)", round, ok, errs)
		}
	}
}

func TestReleaseFreesMemory(t *testing.T) {
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	ctx := context.Background()
	if err := j.Reserve(ctx, "a", "h", "h", 100, 150); err != nil {
		t.Fatal(err)
	}
	if err := j.Reserve(ctx, "b", "h", "h", 100, 150); !errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("second reservation: %v, want ErrInsufficientMemory", err)
	}
	if err := j.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := j.Reserve(ctx, "b", "h", "h", 100, 150); err != nil {
		t.Fatalf("after release: %v", err)
	}
}
