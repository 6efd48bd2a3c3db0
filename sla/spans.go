package sla

import (
	"slices"
	"time"
)

// Span is a half-open time interval [Start, End).
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Duration is End − Start, or 0 for an empty span.
func (s Span) Duration() time.Duration {
	if !s.End.After(s.Start) {
		return 0
	}
	return s.End.Sub(s.Start)
}

func (s Span) empty() bool { return !s.End.After(s.Start) }

// clip returns s ∩ w (possibly empty).
func (s Span) clip(w Span) Span {
	if s.Start.Before(w.Start) {
		s.Start = w.Start
	}
	if s.End.After(w.End) {
		s.End = w.End
	}
	return s
}

// union merges overlapping and touching spans; the result is sorted and
// disjoint. Empty spans are dropped. spans is reordered.
func union(spans []Span) []Span {
	slices.SortFunc(spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
	var out []Span
	for _, s := range spans {
		if s.empty() {
			continue
		}
		if n := len(out); n > 0 && !s.Start.After(out[n-1].End) {
			if s.End.After(out[n-1].End) {
				out[n-1].End = s.End
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// subtract returns a \ b for sorted disjoint a and b.
func subtract(a, b []Span) []Span {
	var out []Span
	j := 0
	for _, s := range a {
		for j < len(b) && !b[j].End.After(s.Start) {
			j++
		}
		cur := s
		for k := j; k < len(b) && b[k].Start.Before(cur.End); k++ {
			if b[k].Start.After(cur.Start) {
				out = append(out, Span{cur.Start, b[k].Start})
			}
			if b[k].End.After(cur.Start) {
				cur.Start = b[k].End
			}
			if !cur.End.After(cur.Start) {
				break
			}
		}
		if cur.End.After(cur.Start) {
			out = append(out, cur)
		}
	}
	return out
}

func total(spans []Span) time.Duration {
	var d time.Duration
	for _, s := range spans {
		d += s.Duration()
	}
	return d
}
