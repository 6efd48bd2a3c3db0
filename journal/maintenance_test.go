package journal

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestMaintenanceMarks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	m := openTestJournal(t, path)
	t0 := time.UnixMilli(1_700_000_000_000)
	m.now = func() time.Time { return t0 }
	if err := m.SetMaintenance(ctx, "host-b", "kernel update"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMaintenance(ctx, "host-a", ""); err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return t0.Add(time.Hour) }
	if err := m.SetMaintenance(ctx, "host-b", "kernel 6.12"); err != nil { // again: keeps since, new reason
		t.Fatal(err)
	}

	// A second process sees the marks.
	m2 := openTestJournal(t, path)
	got, err := m2.Maintenance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Host != "host-a" || got[1].Host != "host-b" ||
		got[1].Reason != "kernel 6.12" || !got[1].Since.Equal(t0) {
		t.Fatalf("marks %+v", got)
	}

	if was, err := m2.ClearMaintenance(ctx, "host-b"); err != nil || !was {
		t.Fatalf("clear: %v %v", was, err)
	}
	if was, err := m2.ClearMaintenance(ctx, "host-b"); err != nil || was {
		t.Fatalf("second clear: %v %v", was, err)
	}
	if got, _ := m.Maintenance(ctx); len(got) != 1 || got[0].Host != "host-a" {
		t.Fatalf("after clear %+v", got)
	}
}
