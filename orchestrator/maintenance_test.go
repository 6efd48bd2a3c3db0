package orchestrator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryvm/ferry/store"
)

func TestMaintenanceMarks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m, err := OpenMaintenance(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	m.now = func() time.Time { return t0 }
	if err := m.Set(ctx, "host-b", "kernel update"); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, "host-a", ""); err != nil {
		t.Fatal(err)
	}
	m.now = func() time.Time { return t0.Add(time.Hour) }
	if err := m.Set(ctx, "host-b", "kernel 6.12"); err != nil { // again: keeps since, new reason
		t.Fatal(err)
	}

	// A second process sees the marks.
	db2, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	m2, err := OpenMaintenance(ctx, db2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Host != "host-a" || got[1].Host != "host-b" ||
		got[1].Reason != "kernel 6.12" || !got[1].Since.Equal(t0) {
		t.Fatalf("marks %+v", got)
	}

	if was, err := m2.Clear(ctx, "host-b"); err != nil || !was {
		t.Fatalf("clear: %v %v", was, err)
	}
	if was, err := m2.Clear(ctx, "host-b"); err != nil || was {
		t.Fatalf("second clear: %v %v", was, err)
	}
	if got, _ := m.List(ctx); len(got) != 1 || got[0].Host != "host-a" {
		t.Fatalf("after clear %+v", got)
	}
}
