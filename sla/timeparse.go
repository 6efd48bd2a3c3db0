package sla

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseTime reads a time as people type it on a command line:
//
//	now                         the current time
//	-24h, -30d, -1d12h, +15m    relative to now (d is 24 h; Go durations otherwise)
//	2025-06-01T12:00:00Z        RFC 3339, with optional fraction and any zone
//	2025-06-01T12:00:00         no zone: local time
//	2025-06-01                  midnight, local time
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, fmt.Errorf("empty time")
	case strings.EqualFold(s, "now"):
		return now, nil
	case s[0] == '-' || s[0] == '+':
		d, err := parseRelative(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: %w", s, err)
		}
		if s[0] == '-' {
			d = -d
		}
		return now.Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want now, a relative time such as -24h or -7d, RFC 3339 (2006-01-02T15:04:05Z07:00) or a date (2006-01-02)", s)
}

// parseRelative reads "30d", "1d12h", "90m": days, then a Go duration.
func parseRelative(s string) (time.Duration, error) {
	var d time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.Atoi(s[:i])
		if err != nil || days < 0 || days > 100*365 {
			return 0, fmt.Errorf("bad number of days %q", s[:i])
		}
		d = time.Duration(days) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return d, nil
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil || rest < 0 {
		return 0, fmt.Errorf("not a duration such as 24h, 7d or 1d12h")
	}
	if rest > math.MaxInt64-d { // days plus a huge duration would wrap negative
		return 0, fmt.Errorf("too far from now")
	}
	return d + rest, nil
}
