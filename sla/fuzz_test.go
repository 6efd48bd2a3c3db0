package sla

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseTime: no text crashes the time parser, and a relative time
// lands on its side of now ("+..." never before it, "-..." never after):
// "+36500d2562047h" used to wrap to the past.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "-24h", "-30d", "-1d12h", "+15m", "2025-06-01T12:00:00Z", "2025-06-01T12:00:00",
		"2025-06-01", "+36500d2562047h", "-d", "+1dd", "", "2025-13-01", "-9223372036854775807ns"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s, now)
		if err != nil {
			return
		}
		switch v := strings.TrimSpace(s); {
		case strings.HasPrefix(v, "+") && got.Before(now):
			t.Fatalf("%q: %s is before now", s, got)
		case strings.HasPrefix(v, "-") && got.After(now):
			t.Fatalf("%q: %s is after now", s, got)
		}
	})
}
