package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/ferryvm/ferry/units"
)

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func rate(bps uint64) string { return units.IEC(bps) + "/s" }

func dur(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// writeJSONList writes rows as a JSON array: [] rather than null when there
// are none, so that scripts can always iterate over the answer.
func writeJSONList[T any](out io.Writer, rows []T) error {
	if rows == nil {
		rows = []T{}
	}
	return writeJSON(out, rows)
}

// writeList writes the rows of a listing command as a JSON array, or for
// humans as a table: header, then one line per row written by row.
func writeList[T any](out io.Writer, a *app, rows []T, header string, row func(w io.Writer, r T)) error {
	if a.json() {
		return writeJSONList(out, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		row(tw, r)
	}
	return tw.Flush()
}
