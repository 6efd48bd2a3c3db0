package sla

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

func TestImport(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	input := `{"kind":"PS_Timeout","host":"host-a","observed_at":"2025-06-01T01:00:00Z"}

{"kind":"PS_Unreachable","host":"host-a","observed_at":"2025-06-01T01:00:40.5+02:00","detail":"3 timeouts"}
{"kind":"Migration_Completed","host":"host-b","vm":"vm1","vm_uuid":"6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11","observed_at":"2025-06-01T02:00:00Z","correlation_id":"m1","dedup_key":"old-sys-42","payload":{"downtime_ms":80}}
`
	n, err := l.Import(ctx, strings.NewReader(input), "nagios")
	if err != nil || n != 3 {
		t.Fatalf("import: %d, %v", n, err)
	}
	evs, _ := l.Query(ctx, Filter{})
	if len(evs) != 3 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0] // 01:00:40.5+02:00 is 23:00:40.5Z the day before
	if e.Kind != PSUnreachable || !e.ObservedAt.Equal(time.Date(2025, 5, 31, 23, 0, 40, 5e8, time.UTC)) ||
		e.Source != "import:nagios" || e.Detail != "3 timeouts" {
		t.Errorf("first event: %+v", e)
	}
	if e := evs[2]; e.DedupKey != "old-sys-42" || string(e.Payload) != `{"downtime_ms":80}` || e.VMUUID == "" {
		t.Errorf("last event: %+v", e)
	}
	// Importing the same file again inserts nothing new.
	n, err = l.Import(ctx, strings.NewReader(input), "import:nagios")
	if err != nil || n != 0 {
		t.Fatalf("re-import: %d, %v", n, err)
	}
	if _, err := l.Import(ctx, strings.NewReader(input), " "); err == nil {
		t.Error("import without a source name")
	}
}

func TestImportBadLines(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	lines := []string{
		`{"kind":"PS_Timeout","host":"host-a","observed_at":"2025-06-01T01:00:00Z"}`,
		`{"kind":"PS_Timeout","observed_at":"2025-06-01T01:00:20Z"}`,      // 2: no host
		`{"kind":"PS_Timeout","host":"host-a","observed_at":"yesterday"}`, // 3: bad time
		`not json`, // 4
		`{"kind":"PS_Timeout","host":"host-a","observed_at":"2025-06-01T01:00:00Z","x":1}`, // 5: unknown field
		`{"kind":"VM_Exploded","vm":"vm1","observed_at":"2025-06-01T01:00:00Z"}`,           // 6: unknown kind
		`{"kind":"Migration_Completed","vm":"vm1","observed_at":"2025-06-01T01:00:00Z"}`,   // 7: no correlation id, no downtime
		`{"kind":"PS_Reachable","host":"host-a","observed_at":"2025-06-01T01:05:00Z"}`,
	}
	_, err := l.Import(ctx, strings.NewReader(strings.Join(lines, "\n")), "old")
	var ie *ImportError
	if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("err = %v", err)
	}
	var got []int
	for _, le := range ie.Lines {
		got = append(got, le.Line)
	}
	if fmt.Sprint(got) != "[2 3 4 5 6 7]" || ie.Total != 6 {
		t.Errorf("bad lines %v (total %d)", got, ie.Total)
	}
	msg := err.Error()
	for _, want := range []string{"line 2: host: required", "line 3: observed_at", "line 4: not a JSON", `line 5: not a JSON event object: json: unknown field "x"`,
		"line 6: kind: unknown", "line 7: correlation_id: required", "payload: downtime_ms is required"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if evs, _ := l.Query(ctx, Filter{}); len(evs) != 0 {
		t.Errorf("%d events inserted from a bad file", len(evs))
	}

	// The list is capped, the total is not; valid lines in between are not inserted.
	var b strings.Builder
	for i := range 50 {
		if i%2 == 0 {
			b.WriteString(`{"kind":"PS_Timeout","observed_at":"2025-06-01T01:00:00Z"}` + "\n")
		} else {
			fmt.Fprintf(&b, `{"kind":"PS_Timeout","host":"h","observed_at":"2025-06-01T01:%02d:00Z"}`+"\n", i)
		}
	}
	_, err = l.Import(ctx, strings.NewReader(b.String()), "old")
	if !errors.As(err, &ie) || len(ie.Lines) != MaxImportErrors || ie.Total != 25 || !strings.Contains(err.Error(), "and 5 more") {
		t.Errorf("capped: %v", err)
	}
	if evs, _ := l.Query(ctx, Filter{}); len(evs) != 0 {
		t.Errorf("%d events inserted from a bad file", len(evs))
	}
}

// A large import commits in batches: between two of them another process
// (here a second connection pool on the same file, with no busy wait) can
// write, so a migration's journal write never waits behind a whole import.
func TestImportCommitsInBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := journal.OpenDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := NewLog(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Exec("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"); err != nil {
		t.Fatal(err)
	}
	defer func(b int) { importBatch, importBatchDone = b, nil }(importBatch)
	importBatch = 3
	var batches []int
	importBatchDone = func(n int) {
		batches = append(batches, n)
		if _, err := other.Exec("INSERT INTO probe VALUES (?)", n); err != nil {
			t.Errorf("another writer was locked out between batches: %v", err)
		}
	}
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, `{"kind":"PS_Timeout","host":"host-a","observed_at":"2025-06-01T01:00:%02dZ"}`+"\n", i)
	}
	n, err := l.Import(ctx, strings.NewReader(b.String()), "batches")
	if err != nil || n != 10 {
		t.Fatalf("import: %d, %v", n, err)
	}
	if len(batches) != 4 || batches[3] != 10 {
		t.Fatalf("batches committed at %v, want 4 ending at 10", batches)
	}
	var probes int
	if err := other.QueryRow("SELECT COUNT(*) FROM probe").Scan(&probes); err != nil || probes != 4 {
		t.Fatalf("probe rows %d, %v", probes, err)
	}
}
