package journal

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestOwnerTokenRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		tok  string
		ok   bool
		want ownerID
	}{
		{"v2:m1:b1:42:777", true, ownerID{Machine: "m1", Boot: "b1", PID: 42, Start: "777"}},
		{"42:777", true, ownerID{PID: 42, Start: "777"}},
		{"", false, ownerID{}},
		{"v2::b1:42:777", false, ownerID{}},
		{"v2:m1:b1:x:777", false, ownerID{}},
		{"v2:m1:b1:-3:777", false, ownerID{}},
		{"a:b:c", false, ownerID{}},
	} {
		got, ok := parseOwner(tc.tok)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseOwner(%q) = %+v, %v; want %+v, %v", tc.tok, got, ok, tc.want, tc.ok)
		}
	}
	if o, ok := parseOwner(OwnerToken()); !ok || o.Machine == "" || o.PID == 0 {
		t.Fatalf("this process's token %q does not parse: %+v", OwnerToken(), o)
	}
}

func TestOwnerLive(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	h := hostView{Machine: "here", Boot: "boot-now", ProcStart: func(pid int) string {
		if pid == 100 {
			return "5000"
		}
		return ""
	}}
	for _, tc := range []struct {
		name  string
		o     ownerID
		lease time.Time
		want  bool
	}{
		{"local, running", ownerID{Machine: "here", Boot: "boot-now", PID: 100, Start: "5000"}, time.Time{}, true},
		{"local, pid reused", ownerID{Machine: "here", Boot: "boot-now", PID: 100, Start: "4000"}, time.Time{}, false},
		{"local, gone", ownerID{Machine: "here", Boot: "boot-now", PID: 101, Start: "5000"}, time.Time{}, false},
		{"local, earlier boot", ownerID{Machine: "here", Boot: "boot-old", PID: 100, Start: "5000"}, now, false},
		{"local, a fresh lease does not override /proc", ownerID{Machine: "here", Boot: "boot-now", PID: 101, Start: "1"}, now, false},
		{"legacy token, running", ownerID{PID: 100, Start: "5000"}, time.Time{}, true},
		{"legacy token, gone", ownerID{PID: 101, Start: "5000"}, time.Time{}, false},
		{"other machine, fresh lease", ownerID{Machine: "there", Boot: "b", PID: 7, Start: "1"}, now.Add(-leaseTTL + time.Second), true},
		{"other machine, clock ahead", ownerID{Machine: "there", Boot: "b", PID: 7, Start: "1"}, now.Add(5 * time.Second), true},
		{"other machine, stale lease", ownerID{Machine: "there", Boot: "b", PID: 7, Start: "1"}, now.Add(-leaseTTL), false},
		{"other machine, no lease", ownerID{Machine: "there", Boot: "b", PID: 7, Start: "1"}, time.Time{}, false},
		{"other machine, same pid as a local process", ownerID{Machine: "there", Boot: "boot-now", PID: 100, Start: "5000"}, time.Time{}, false},
	} {
		if got := ownerLive(tc.o, h, tc.lease, now); got != tc.want {
			t.Errorf("%s: ownerLive = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The lease a process records on its first row is what other machines see,
// and the journal reads it back.
func TestLeaseOfForeignOwners(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	if err := j.Create(ctx, &Record{ID: "mine", Kind: "live", VM: "a", State: StateRunning, Owner: OwnerToken()}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := j.db.QueryRow("SELECT COUNT(*) FROM owner_leases WHERE owner = ?", OwnerToken()).Scan(&n); err != nil || n != 1 {
		t.Fatalf("no lease for this process after its first row: %d, %v", n, err)
	}
	fresh := ownerID{Machine: "other-machine", Boot: "b", PID: 12, Start: "3"}.token()
	stale := ownerID{Machine: "other-machine", Boot: "b", PID: 13, Start: "3"}.token()
	for tok, at := range map[string]time.Time{fresh: time.Now(), stale: time.Now().Add(-2 * leaseTTL)} {
		if _, err := j.db.Exec("INSERT INTO owner_leases (owner, machine, pid, renewed_at) VALUES (?, 'other-machine', 1, ?)", tok, ms(at)); err != nil {
			t.Fatal(err)
		}
	}
	if !j.OwnerAlive(ctx, fresh) {
		t.Error("a fresh foreign lease counts as dead")
	}
	if j.OwnerAlive(ctx, stale) {
		t.Error("a stale foreign lease counts as alive")
	}
	if !j.OwnerAlive(ctx, OwnerToken()) {
		t.Error("this process counts as dead")
	}
}
