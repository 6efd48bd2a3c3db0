package store

import (
	"context"
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
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
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
