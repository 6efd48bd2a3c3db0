package journal

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite"
)

// A fresh file gets every step once; opening it again applies none.
func TestSchemaVersionsApplyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	for range 2 {
		j, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		var n, v int
		if err := j.DB().QueryRow("SELECT COUNT(*), MAX(version) FROM schema_version").Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != len(steps) || v != SchemaVersion() {
			t.Fatalf("schema_version has %d rows up to %d, want %d up to %d", n, v, len(steps), SchemaVersion())
		}
		j.Close()
	}
}

// A state file written before schema versions existed (tables made with
// CREATE IF NOT EXISTS, rows in them) is adopted as it is.
func TestSchemaAdoptsAnUnversionedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(steps[0].sql[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO migrations (id, kind, vm_name, state, started_at, updated_at) VALUES ('old', 'live', 'web', 'completed', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	j, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r, err := j.Get(context.Background(), "old")
	if err != nil || r.VM != "web" {
		t.Fatalf("old row: %+v, %v", r, err)
	}
	if _, err := j.Maintenance(context.Background()); err != nil {
		t.Fatalf("a table of step 1 is missing: %v", err)
	}
}

// A file from a newer ferry is refused, not misread.
func TestSchemaFromTheFutureIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	j, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.DB().Exec("INSERT INTO schema_version (version) VALUES (?)", SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := Open(context.Background(), path); !errors.Is(err, ErrDatabase) {
		t.Fatalf("open of a newer schema: %v, want ErrDatabase", err)
	}
}

// Database failures are ErrDatabase, whatever the call: callers tell them
// from refusals (nothing changed) by this alone.
func TestDatabaseFailuresAreErrDatabase(t *testing.T) {
	j, err := Open(context.Background(), filepath.Join(t.TempDir(), "ferry.db"))
	if err != nil {
		t.Fatal(err)
	}
	j.DB().Close()
	ctx := context.Background()
	checks := map[string]error{
		"create":  j.Create(ctx, &Record{ID: "a", Kind: KindLive, VM: "web", State: StateRunning}),
		"update":  j.Update(ctx, "a", map[string]any{"notes": "x"}),
		"reserve": j.Reserve(ctx, "a", "h", "h", 1, 2),
		"slot":    j.AcquireSlot(ctx, "a", SlotHost{Key: "s"}, SlotHost{Key: "d"}, 1, 1),
	}
	_, checks["list"] = j.List(ctx, ListFilter{})
	_, checks["claim"] = j.Claim(ctx, "a", "u", nil, nil)
	_, checks["maintenance"] = j.Maintenance(ctx)
	for what, err := range checks {
		if !errors.Is(err, ErrDatabase) {
			t.Errorf("%s on a closed database: %v, want ErrDatabase", what, err)
		}
	}
}
