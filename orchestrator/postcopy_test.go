package orchestrator

import (
	"testing"
	"time"

	"github.com/ferryvm/ferry/inventory"
)

func TestNextResume(t *testing.T) {
	s := time.Second
	pol := ResumePolicy{Window: 10 * s, Initial: s, Max: 4 * s}
	cases := []struct {
		name     string
		attempts int
		paused   time.Duration
		wait     time.Duration
		ok       bool
	}{
		{"first attempt at once", 0, 0, 0, true},
		{"second after Initial", 1, 100 * time.Millisecond, s, true},
		{"doubles", 2, 2 * s, 2 * s, true},
		{"doubles again", 3, 3 * s, 4 * s, true},
		{"capped at Max", 6, 5 * s, 4 * s, true},
		{"last one falls on the window's end", 5, 8 * s, 2 * s, true},
		{"window over", 7, 10 * s, 0, false},
		{"window long over", 1, time.Hour, 0, false},
		{"huge attempt count stays capped", 80, s, 4 * s, true},
	}
	for _, c := range cases {
		wait, ok := nextResume(pol, c.attempts, c.paused)
		if wait != c.wait || ok != c.ok {
			t.Errorf("%s: nextResume(%d, %s) = %s %v, want %s %v", c.name, c.attempts, c.paused, wait, ok, c.wait, c.ok)
		}
	}
	// Defaults: a zero policy still has a window, an immediate first try and backoff.
	if w, ok := nextResume(ResumePolicy{}, 0, 0); w != 0 || !ok {
		t.Errorf("default first attempt: %s %v", w, ok)
	}
	if w, ok := nextResume(ResumePolicy{}, 1, 0); w != 500*time.Millisecond || !ok {
		t.Errorf("default second attempt: %s %v", w, ok)
	}
	if _, ok := nextResume(ResumePolicy{}, 3, DefaultPostcopyResumeWindow); ok {
		t.Error("default window does not end")
	}
}

func TestPickPostcopyPort(t *testing.T) {
	cases := []struct {
		used map[int]bool
		port int
		ok   bool
	}{
		{nil, 49215, true},
		{map[int]bool{49215: true}, 49214, true},
		{map[int]bool{49215: true, 49213: true}, 49214, true},
	}
	for _, c := range cases {
		p, ok := pickPostcopyPort(c.used)
		if p != c.port || ok != c.ok {
			t.Errorf("pickPostcopyPort(%v) = %d %v, want %d %v", c.used, p, ok, c.port, c.ok)
		}
	}
	all := map[int]bool{}
	for p := postcopyPortMin; p <= postcopyPortMax; p++ {
		all[p] = true
	}
	if _, ok := pickPostcopyPort(all); ok {
		t.Error("a full range gave a port")
	}
}

func TestPostcopyDataURI(t *testing.T) {
	cases := []struct {
		h    inventory.Host
		want string
	}{
		{inventory.Host{URI: "qemu+tcp://10.0.0.2/system", MigrationAddress: "192.168.1.2"}, "tcp://192.168.1.2:49215"},
		{inventory.Host{URI: "qemu+tcp://host-b/system"}, "tcp://host-b:49215"},
		{inventory.Host{URI: "qemu+tcp://[fd00::2]/system"}, "tcp://[fd00::2]:49215"},
		{inventory.Host{URI: "qemu:///system"}, ""},
	}
	for _, c := range cases {
		if got := postcopyDataURI(c.h, 49215); got != c.want {
			t.Errorf("postcopyDataURI(%+v) = %q, want %q", c.h, got, c.want)
		}
		if c.want != "" && uriPort(c.want) != 49215 {
			t.Errorf("uriPort(%q) = %d", c.want, uriPort(c.want))
		}
	}
	if got := optionsDataURI(`{"allow_postcopy":true,"postcopy_data_uri":"tcp://h:1"}`); got != "tcp://h:1" {
		t.Errorf("optionsDataURI = %q", got)
	}
	if got := optionsDataURI(`not json`); got != "" {
		t.Errorf("optionsDataURI(garbage) = %q", got)
	}
}
