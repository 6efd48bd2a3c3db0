package sla

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// importLine is one line of an import file.
type importLine struct {
	Kind          Kind            `json:"kind"`
	Host          string          `json:"host"`
	VM            string          `json:"vm"`
	VMUUID        string          `json:"vm_uuid"`
	ObservedAt    string          `json:"observed_at"`
	Detail        string          `json:"detail"`
	CorrelationID string          `json:"correlation_id"`
	DedupKey      string          `json:"dedup_key"`
	Payload       json.RawMessage `json:"payload"`
}

// MaxImportErrors caps the bad lines listed in an ImportError.
const MaxImportErrors = 20

// maxLineBytes bounds one import line.
const maxLineBytes = 1 << 20

// LineError is one rejected import line.
type LineError struct {
	Line int
	Err  error
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// ImportError lists the bad lines of a rejected import (at most
// MaxImportErrors of them; Total counts all). Nothing was inserted.
type ImportError struct {
	Source string
	Lines  []LineError
	Total  int
}

func (e *ImportError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sla: import %s: %d bad line(s), nothing imported", e.Source, e.Total)
	for _, l := range e.Lines {
		b.WriteString("\n  ")
		b.WriteString(l.Error())
	}
	if e.Total > len(e.Lines) {
		fmt.Fprintf(&b, "\n  ... and %d more", e.Total-len(e.Lines))
	}
	return b.String()
}

// Unwrap lets errors.Is(err, ErrInvalidEvent) hold.
func (e *ImportError) Unwrap() error { return ErrInvalidEvent }

// Import reads JSON lines (fields: kind, host, vm, vm_uuid, observed_at in
// RFC 3339 with optional fraction, detail, correlation_id, dedup_key, payload;
// unknown fields are errors; blank lines are skipped) and stores them as events
// from source "import:<source>". Every line is validated; if any is bad, Import
// returns an *ImportError naming each bad line and reason and inserts nothing.
// Otherwise all lines are inserted in one transaction and n counts the new rows
// (lines whose dedup key is already stored are skipped).
func (l *Log) Import(ctx context.Context, r io.Reader, source string) (n int, err error) {
	source = strings.TrimPrefix(source, SourceImportPrefix)
	if strings.TrimSpace(source) == "" {
		return 0, errors.New("sla: import: a source name is required")
	}
	source = SourceImportPrefix + source
	received := l.now()

	var bad *ImportError
	err = l.bulkTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, bad, err = l.importTx(ctx, tx, r, source, received)
		if err == nil && bad != nil {
			err = bad
		}
		return err
	})
	if bad != nil {
		return 0, bad
	}
	if err != nil {
		return 0, fmt.Errorf("sla: import %s: %w", source, err)
	}
	return n, nil
}

// importTx reads, validates and inserts the lines within tx. bad lists the bad
// lines, if any; then the caller must roll back.
func (l *Log) importTx(ctx context.Context, tx *sql.Tx, r io.Reader, source string, received time.Time) (n int, bad *ImportError, err error) {
	in, err := newInserter(ctx, tx)
	if err != nil {
		return 0, nil, err
	}
	defer in.close()

	bad = &ImportError{Source: source}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		e, err := parseImportLine(line, source)
		if err == nil {
			err = l.prepare(&e, received)
		}
		if err != nil {
			bad.Total++
			if len(bad.Lines) < MaxImportErrors {
				bad.Lines = append(bad.Lines, LineError{Line: lineNo, Err: err})
			}
			continue
		}
		if bad.Total > 0 {
			continue // keep validating, but nothing will be committed
		}
		if err := in.add(ctx, &e); err != nil {
			return 0, nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if lineNo%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if !errors.Is(err, bufio.ErrTooLong) {
			return 0, nil, fmt.Errorf("read: %w", err)
		}
		bad.Total++
		if len(bad.Lines) < MaxImportErrors {
			bad.Lines = append(bad.Lines, LineError{Line: lineNo + 1, Err: fmt.Errorf("longer than %d bytes", maxLineBytes)})
		}
	}
	if bad.Total > 0 {
		return 0, bad, nil
	}
	return in.inserted, nil, nil
}

// parseImportLine decodes one line into an event (not yet validated).
func parseImportLine(line []byte, source string) (Event, error) {
	var il importLine
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&il); err != nil {
		return Event{}, fmt.Errorf("not a JSON event object: %w", err)
	}
	if d.More() {
		return Event{}, errors.New("trailing data after the JSON object")
	}
	e := Event{
		DedupKey:      il.DedupKey,
		Kind:          il.Kind,
		Host:          il.Host,
		VMName:        il.VM,
		VMUUID:        il.VMUUID,
		Source:        source,
		Detail:        il.Detail,
		CorrelationID: il.CorrelationID,
	}
	if p := bytes.TrimSpace(il.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		e.Payload = append(json.RawMessage(nil), p...)
	}
	if il.ObservedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, il.ObservedAt)
		if err != nil {
			return Event{}, &FieldError{Field: "observed_at", Reason: fmt.Sprintf("want RFC 3339 (2006-01-02T15:04:05.999999999Z07:00), got %q", il.ObservedAt)}
		}
		e.ObservedAt = t.UTC()
	}
	return e, nil
}
