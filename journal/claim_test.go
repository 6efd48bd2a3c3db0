package journal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const claimVM = "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f"

// Ten moves of one VM, each in its own connection pool as ten processes
// would be, claim at once: exactly one wins, the others are refused as busy
// naming the winner, and nothing of the winner's row changes.
func TestClaimIsAtomicAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	const n = 10
	journals := make([]*Journal, n)
	for i := range journals {
		journals[i] = openTestJournal(t, path)
		if err := journals[i].Create(ctx, &Record{ID: fmt.Sprintf("m-%d", i), Kind: "live", VM: "web", State: StateRunning, Owner: OwnerToken()}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range journals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = journals[i].Claim(ctx, fmt.Sprintf("m-%d", i), claimVM, map[string]any{"src_name": "h1"}, nil)
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("both m-%d and m-%d claimed the VM", winner, i)
			}
			winner = i
		case !errors.Is(err, ErrClaimed):
			t.Fatalf("m-%d: %v, want a busy refusal", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no move claimed the VM")
	}
	for i, err := range errs {
		if i != winner && !strings.Contains(err.Error(), fmt.Sprintf("m-%d", winner)) {
			t.Errorf("m-%d's refusal does not name the winner m-%d: %v", i, winner, err)
		}
	}
	open, err := journals[0].OpenForVM(ctx, claimVM)
	if err != nil || open == nil || open.ID != fmt.Sprintf("m-%d", winner) || open.Source != "h1" {
		t.Fatalf("open row = %+v, %v; want the winner's", open, err)
	}
}

// The database itself refuses a second unfinished row of one VM, whatever
// writes it.
func TestOneOpenRowPerVMIsAConstraint(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	for _, id := range []string{"a", "b"} {
		if err := j.Create(ctx, &Record{ID: id, Kind: "live", VM: "web", State: StateRunning}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Update(ctx, "a", map[string]any{"vm_uuid": claimVM}); err != nil {
		t.Fatal(err)
	}
	if err := j.Update(ctx, "b", map[string]any{"vm_uuid": claimVM}); err == nil {
		t.Fatal("two unfinished rows of one VM were written")
	}
	if err := j.Finish(ctx, "a", StateCompleted, "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Claim(ctx, "b", claimVM, nil, nil); err != nil {
		t.Fatalf("claim after the first move finished: %v", err)
	}
}

// A cold move takes over an interrupted one (its owner gone) in the claim
// itself; a live owner's row is never taken over, even when takeOver would.
func TestClaimTakesOverOnlyWhatItMay(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	dead := ownerID{Machine: localHost().Machine, Boot: localHost().Boot, PID: 999999999, Start: "1"}.token()
	if err := j.Create(ctx, &Record{ID: "old", Kind: "cold", VM: "web", State: StateRunning, Owner: dead}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Claim(ctx, "old", claimVM, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := j.Create(ctx, &Record{ID: "new", Kind: "cold", VM: "web", State: StateRunning, Owner: OwnerToken()}); err != nil {
		t.Fatal(err)
	}
	taken, err := j.Claim(ctx, "new", claimVM, nil, func(r *Record, alive bool) bool { return !alive })
	if err != nil || taken == nil || taken.ID != "old" {
		t.Fatalf("take-over: %+v, %v", taken, err)
	}
	if r, _ := j.Get(ctx, "old"); r.State != StateResumed {
		t.Fatalf("the taken-over row is %s, want %s", r.State, StateResumed)
	}
	// "new" is owned by this live process: a third move may not take it.
	if err := j.Create(ctx, &Record{ID: "third", Kind: "cold", VM: "web", State: StateRunning, Owner: OwnerToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Claim(ctx, "third", claimVM, nil, func(r *Record, alive bool) bool { return !alive }); !errors.Is(err, ErrClaimed) {
		t.Fatalf("a live owner's row was taken over: %v", err)
	}
}

// Slots and recover trust a foreign machine's fresh lease.
func TestForeignLeaseHoldsSlots(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	j := openTestJournal(t, path)
	db := j.DB()
	foreign := ownerID{Machine: "machine-b", Boot: "b", PID: 4242, Start: "9"}.token()
	if err := j.Create(ctx, &Record{ID: "f", Kind: "live", VM: "web", State: StateRunning, Owner: foreign}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO owner_leases (owner, machine, pid, renewed_at) VALUES (?, 'machine-b', 4242, ?)", foreign, ms(time.Now())); err != nil {
		t.Fatal(err)
	}
	dst := SlotHost{Key: "k", Name: "dst"}
	if err := j.AcquireSlot(ctx, "f", SlotHost{Key: "s", Name: "s"}, dst, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := j.AcquireSlot(ctx, "g", SlotHost{Key: "s2", Name: "s2"}, dst, 1, 0); !errors.Is(err, ErrLimit) {
		t.Fatalf("a foreign live lease's slot was not counted: %v", err)
	}
	if _, err := db.Exec("UPDATE owner_leases SET renewed_at = ? WHERE owner = ?", ms(time.Now().Add(-2*leaseTTL)), foreign); err != nil {
		t.Fatal(err)
	}
	if err := j.AcquireSlot(ctx, "g", SlotHost{Key: "s2", Name: "s2"}, dst, 1, 0); err != nil {
		t.Fatalf("a stale foreign lease's slot still counts: %v", err)
	}
}
