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
	"os"
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

// importBatch is how many events one import transaction inserts: a batch
// holds the state's write lock well under a second, so a migration's journal
// write never waits out its busy timeout behind a large import.
var importBatch = 20000

// Import reads JSON lines (fields: kind, host, vm, vm_uuid, observed_at in
// RFC 3339 with optional fraction, detail, correlation_id, dedup_key, payload;
// unknown fields are errors; blank lines are skipped) and stores them as events
// from source "import:<source>". Every line is validated first (the input is
// spooled to a temporary file); if any is bad, Import returns an *ImportError
// naming each bad line and reason and inserts nothing. Otherwise the lines are
// inserted in transactions of importBatch events and n counts the new rows
// (lines whose dedup key is already stored are skipped, so an import stopped
// between batches is finished by running it again).
func (l *Log) Import(ctx context.Context, r io.Reader, source string) (n int, err error) {
	source = strings.TrimPrefix(source, SourceImportPrefix)
	if strings.TrimSpace(source) == "" {
		return 0, errors.New("sla: import: a source name is required")
	}
	source = SourceImportPrefix + source
	received := l.now()

	spool, err := os.CreateTemp("", "ferry-sla-import-*.jsonl")
	if err != nil {
		return 0, fmt.Errorf("sla: import %s: spool: %w", source, err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	bad, err := validateImport(ctx, r, spool, source, l, received)
	if err != nil {
		return 0, fmt.Errorf("sla: import %s: %w", source, err)
	}
	if bad != nil {
		return 0, bad
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("sla: import %s: spool: %w", source, err)
	}
	sc := bufio.NewScanner(spool)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	for more := true; more; {
		err := l.bulkTx(ctx, func(tx *sql.Tx) error {
			in, err := newInserter(ctx, tx)
			if err != nil {
				return err
			}
			defer in.close()
			for i := 0; i < importBatch; i++ {
				if !sc.Scan() {
					more = false
					break
				}
				e, err := parseImportLine(sc.Bytes(), source)
				if err == nil {
					err = l.prepare(&e, received)
				}
				if err == nil {
					err = in.add(ctx, &e)
				}
				if err != nil {
					return err // validated before: only the database can fail here
				}
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			n += in.inserted
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("sla: import %s (%d events stored before this error; run it again to finish): %w", source, n, err)
		}
		if importBatchDone != nil {
			importBatchDone(n)
		}
	}
	return n, nil
}

// importBatchDone, when set (by tests), is called after each committed batch.
var importBatchDone func(inserted int)

// validateImport checks every line and copies the non-blank ones to spool.
// bad lists the bad lines, if any.
func validateImport(ctx context.Context, r io.Reader, spool io.Writer, source string, l *Log, received time.Time) (*ImportError, error) {
	w := bufio.NewWriter(spool)
	bad := &ImportError{Source: source}
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
		if bad.Total == 0 {
			w.Write(line)
			if err := w.WriteByte('\n'); err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
		}
		if lineNo%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if !errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("read: %w", err)
		}
		bad.Total++
		if len(bad.Lines) < MaxImportErrors {
			bad.Lines = append(bad.Lines, LineError{Line: lineNo + 1, Err: fmt.Errorf("longer than %d bytes", maxLineBytes)})
		}
	}
	if bad.Total > 0 {
		return bad, nil
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return nil, nil
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
