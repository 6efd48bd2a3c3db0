package journal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

func openTestJournal(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
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
			case !errors.Is(err, ErrNoRoom):
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
	if err := j.Reserve(ctx, "b", "h", "h", 100, 150); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("second reservation: %v, want ErrNoRoom", err)
	}
	if err := j.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := j.Reserve(ctx, "b", "h", "h", 100, 150); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// Move slots hold across processes: four connections race for a host with
// max_incoming 2; exactly two win, and a release lets the next one in.
func TestAcquireSlotAcrossConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	var journals []*Journal
	for i := 0; i < 4; i++ {
		journals = append(journals, openTestJournal(t, path))
	}
	ctx := context.Background()
	dst := SlotHost{Key: "uuid-b", Name: "host-b"}
	var wg sync.WaitGroup
	errs := make([]error, len(journals))
	for i := range journals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := SlotHost{Key: fmt.Sprintf("uuid-src-%d", i), Name: fmt.Sprintf("src-%d", i)}
			errs[i] = journals[i].AcquireSlot(ctx, fmt.Sprintf("m-%d", i), src, dst, 2, 0)
		}()
	}
	wg.Wait()
	var won []int
	for i, err := range errs {
		switch {
		case err == nil:
			won = append(won, i)
		case !errors.Is(err, ErrLimit):
			t.Fatalf("unexpected error %v", err)
		}
	}
	if len(won) != 2 {
		t.Fatalf("%d slots granted, want 2 (%v)", len(won), errs)
	}
	if in, _, err := journals[0].InFlight(ctx, "uuid-b"); err != nil || in != 2 {
		t.Fatalf("InFlight = %d, %v", in, err)
	}
	if err := journals[0].Release(ctx, fmt.Sprintf("m-%d", won[0])); err != nil {
		t.Fatal(err)
	}
	if err := journals[1].AcquireSlot(ctx, "m-late", SlotHost{Key: "x", Name: "x"}, dst, 2, 0); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// Outgoing limit, per source.
	src := SlotHost{Key: "uuid-a", Name: "host-a"}
	if err := journals[2].AcquireSlot(ctx, "o-1", src, SlotHost{Key: "c1", Name: "c1"}, 0, 1); err != nil {
		t.Fatal(err)
	}
	err := journals[3].AcquireSlot(ctx, "o-2", src, SlotHost{Key: "c2", Name: "c2"}, 0, 1)
	if !errors.Is(err, ErrLimit) || err.Error() == "" {
		t.Fatalf("second outgoing slot: %v", err)
	}
}

// A slot held by a migration whose ferry process died does not block
// later moves; one held by a live process does.
func TestSlotOfDeadProcessDoesNotCount(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	dst := SlotHost{Key: "uuid-b", Name: "host-b"}
	for _, r := range []*Record{
		{ID: "dead", Kind: "live", VM: "a", State: StateRunning, Owner: "999999999:1"},
		{ID: "alive", Kind: "live", VM: "b", State: StateRunning, Owner: OwnerToken()},
	} {
		if err := j.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.AcquireSlot(ctx, "dead", SlotHost{Key: "s1", Name: "s1"}, dst, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := j.AcquireSlot(ctx, "alive", SlotHost{Key: "s2", Name: "s2"}, dst, 1, 0); err != nil {
		t.Fatalf("the dead process's slot blocked a new one: %v", err)
	}
	if err := j.AcquireSlot(ctx, "next", SlotHost{Key: "s3", Name: "s3"}, dst, 1, 0); !errors.Is(err, ErrLimit) {
		t.Fatalf("a live process's slot did not count: %v", err)
	}
	if in, _, _ := j.InFlight(ctx, "uuid-b"); in != 1 {
		t.Fatalf("InFlight = %d, want 1", in)
	}
}
