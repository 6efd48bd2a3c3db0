package journal

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenCreatesWALDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ferry.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.DB().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
}

func TestPathPrecedence(t *testing.T) {
	t.Setenv("FERRY_STATE", "/env/path.db")
	if got := Path("/flag.db"); got != "/flag.db" {
		t.Fatalf("flag: got %q", got)
	}
	if got := Path(""); got != "/env/path.db" {
		t.Fatalf("env: got %q", got)
	}
	t.Setenv("FERRY_STATE", "")
	if got := Path(""); got != DefaultPath {
		t.Fatalf("default: got %q", got)
	}
}

func TestOpenMakesStatePrivateAndDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.DB().Exec("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 600", p, fi.Mode().Perm())
		}
	}
	var sync, busy int
	if err := db.DB().QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != 2 { // FULL
		t.Errorf("synchronous = %d, want 2 (FULL)", sync)
	}
	if err := db.DB().QueryRow("PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if busy < 30000 {
		t.Errorf("busy_timeout = %d ms, want >= 30000", busy)
	}
}

func TestOpenTightensAnOpenState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o, want 600", fi.Mode().Perm())
	}
}
