package placement

import (
	"errors"
	"strings"
	"testing"
)

const gib = uint64(1) << 30

// host is a candidate that fits a 1 GiB, 2-vCPU VM with the given free memory.
func host(name string, freeGiB uint64) Candidate {
	return Candidate{Name: name, FreeMemoryBytes: freeGiB * gib, HostReserveBytes: 256 << 20, CPUs: 4, CPUCompatible: true, Reachable: true}
}

func with(c Candidate, f func(*Candidate)) Candidate { f(&c); return c }

func TestPlace(t *testing.T) {
	vm := VMNeeds{Name: "web-01", MemoryBytes: 1 * gib, VCPUs: 2}
	rack := func(r string) func(*Candidate) {
		return func(c *Candidate) { c.Labels = map[string]string{"rack": r} }
	}
	tests := []struct {
		name   string
		cands  []Candidate
		opt    Options
		want   string            // chosen host, "" for none
		reject map[string]string // host -> substring of its reason
		order  []string          // expected order of hosts that fit
	}{
		{
			name:  "most free memory first",
			cands: []Candidate{host("h1", 4), host("h2", 8), host("h3", 6)},
			want:  "h2", order: []string{"h2", "h3", "h1"},
		},
		{
			name:  "ties broken by name",
			cands: []Candidate{host("hb", 4), host("ha", 4)},
			want:  "ha", order: []string{"ha", "hb"},
		},
		{
			name:   "source rejected even with most memory",
			cands:  []Candidate{with(host("src", 32), func(c *Candidate) { c.IsSource = true }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"src": "source"},
		},
		{
			name:   "unreachable rejected",
			cands:  []Candidate{with(host("down", 32), func(c *Candidate) { c.Reachable, c.Error = false, "connection refused" }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"down": "unreachable: connection refused"},
		},
		{
			name:   "maintenance rejected",
			cands:  []Candidate{with(host("m", 32), func(c *Candidate) { c.InMaintenance, c.MaintenanceNote = true, "disk swap" }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"m": "in maintenance: disk swap"},
		},
		{
			name:   "CPU incompatible rejected",
			cands:  []Candidate{with(host("old", 32), func(c *Candidate) { c.CPUCompatible, c.CPUReason = false, "missing avx2" }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"old": "CPU incompatible: missing avx2"},
		},
		{
			name:   "name clash rejected",
			cands:  []Candidate{with(host("stale", 32), func(c *Candidate) { c.Clash = "a domain \"web-01\" is already defined there" }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"stale": "name clash"},
		},
		{
			name:   "too few CPUs rejected",
			cands:  []Candidate{with(host("small", 32), func(c *Candidate) { c.CPUs = 1 }), host("h2", 4)},
			want:   "h2",
			reject: map[string]string{"small": "too few CPUs"},
		},
		{
			name: "memory counts host reserve",
			// 1.125 GiB free - 256 MiB reserve < 1 GiB.
			cands:  []Candidate{with(host("tight", 0), func(c *Candidate) { c.FreeMemoryBytes = gib + 128<<20 }), host("h2", 2)},
			want:   "h2",
			reject: map[string]string{"tight": "not enough memory"},
		},
		{
			name: "memory counts reservations in flight",
			cands: []Candidate{
				with(host("busy", 8), func(c *Candidate) { c.ReservedBytes = 7 * gib }), // 8 - 0.25 - 7 < 1
				host("h2", 2),
			},
			want:   "h2",
			reject: map[string]string{"busy": "held by migrations in flight"},
		},
		{
			name: "reservations lower the ranking",
			cands: []Candidate{
				with(host("busy", 8), func(c *Candidate) { c.ReservedBytes = 5 * gib }), // 2.75 available
				host("h2", 4), // 3.75 available
			},
			want: "h2", order: []string{"h2", "busy"},
		},
		{
			name:   "avoid label rejects",
			cands:  []Candidate{with(host("r1", 32), rack("r1")), with(host("r2", 4), rack("r2"))},
			opt:    Options{Avoid: []Label{{"rack", "r1"}}},
			want:   "r2",
			reject: map[string]string{"r1": "avoided label rack=r1"},
		},
		{
			name:  "avoid label needs the same value",
			cands: []Candidate{with(host("r1", 32), rack("r1")), with(host("r2", 4), rack("r2"))},
			opt:   Options{Avoid: []Label{{"rack", "r3"}}},
			want:  "r1",
		},
		{
			name:  "prefer label beats memory",
			cands: []Candidate{with(host("r1", 32), rack("r1")), with(host("r2", 4), rack("r2"))},
			opt:   Options{Prefer: []Label{{"rack", "r2"}}},
			want:  "r2", order: []string{"r2", "r1"},
		},
		{
			name: "prefer label never makes an unfit host eligible",
			cands: []Candidate{
				with(host("r2", 1), rack("r2")), // 0.75 GiB available
				with(host("r1", 4), rack("r1")),
			},
			opt:    Options{Prefer: []Label{{"rack", "r2"}}},
			want:   "r1",
			reject: map[string]string{"r2": "not enough memory"},
		},
		{
			name: "host at its incoming limit is busy, the other chosen",
			cands: []Candidate{
				with(host("h1", 32), func(c *Candidate) { c.Incoming, c.MaxIncoming = 1, 1 }),
				with(host("h2", 4), func(c *Candidate) { c.Incoming, c.MaxIncoming = 0, 1 }),
			},
			want:   "h2",
			reject: map[string]string{"h1": "busy: 1 move(s) in flight into it (limit 1)"},
		},
		{
			name: "a host that cannot fit is not called busy",
			cands: []Candidate{
				with(host("h1", 1), func(c *Candidate) { c.Incoming, c.MaxIncoming = 1, 1 }),
			},
			want:   "",
			reject: map[string]string{"h1": "not enough memory"},
		},
		{
			name: "nothing fits",
			cands: []Candidate{
				with(host("a", 32), func(c *Candidate) { c.IsSource = true }),
				with(host("b", 32), func(c *Candidate) { c.InMaintenance = true }),
			},
			want:   "",
			reject: map[string]string{"a": "source", "b": "in maintenance"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(vm, tt.cands, tt.opt)
			if p.Host != tt.want {
				t.Fatalf("chose %q, want %q; %s; %+v", p.Host, tt.want, p.Reason, p.Verdicts)
			}
			if len(p.Verdicts) != len(tt.cands) {
				t.Fatalf("%d verdicts for %d candidates", len(p.Verdicts), len(tt.cands))
			}
			byHost := map[string]Verdict{}
			var fits []string
			for _, v := range p.Verdicts {
				byHost[v.Host] = v
				if v.Fits {
					fits = append(fits, v.Host)
				}
				if v.Reason == "" {
					t.Errorf("%s has no reason", v.Host)
				}
				if v.Chosen != (v.Host == tt.want) {
					t.Errorf("%s chosen=%v", v.Host, v.Chosen)
				}
			}
			for h, want := range tt.reject {
				v := byHost[h]
				if v.Fits || !strings.Contains(v.Reason, want) {
					t.Errorf("%s: fits=%v reason %q, want rejection containing %q", h, v.Fits, v.Reason, want)
				}
			}
			if tt.order != nil && strings.Join(fits, ",") != strings.Join(tt.order, ",") {
				t.Errorf("fit order %v, want %v", fits, tt.order)
			}
			if tt.want == "" {
				err := p.Err()
				if !errors.Is(err, ErrNoPlacement) {
					t.Fatalf("Err() = %v", err)
				}
				for h := range tt.reject {
					if !strings.Contains(err.Error(), h+": ") {
						t.Errorf("error %q does not name %s", err, h)
					}
				}
			} else if p.Err() != nil || !strings.HasPrefix(p.Reason, tt.want+":") {
				t.Fatalf("Err() = %v, reason %q", p.Err(), p.Reason)
			}
		})
	}
}

func TestParseLabel(t *testing.T) {
	if l, err := ParseLabel("rack=r1"); err != nil || l != (Label{"rack", "r1"}) {
		t.Fatalf("%v %v", l, err)
	}
	if l, err := ParseLabel("ssd="); err != nil || l != (Label{"ssd", ""}) {
		t.Fatalf("%v %v", l, err)
	}
	for _, bad := range []string{"rack", "=r1", ""} {
		if _, err := ParseLabel(bad); !errors.Is(err, ErrBadLabel) {
			t.Errorf("ParseLabel(%q) = %v", bad, err)
		}
	}
}

func TestPlacementOnlyBusy(t *testing.T) {
	vm := VMNeeds{Name: "v", MemoryBytes: gib, VCPUs: 1}
	busy := func(c *Candidate) { c.Incoming, c.MaxIncoming = 2, 2 }
	tests := []struct {
		name  string
		cands []Candidate
		want  bool
	}{
		{"one fits now", []Candidate{host("a", 4), with(host("b", 4), busy)}, false},
		{"all fitting hosts busy", []Candidate{with(host("a", 4), busy), with(host("b", 4), busy)}, true},
		{"busy one plus one too small", []Candidate{with(host("a", 4), busy), host("b", 1)}, true},
		{"none would ever fit", []Candidate{host("a", 1), with(host("b", 1), busy)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(vm, tt.cands, Options{})
			if got := p.OnlyBusy(); got != tt.want {
				t.Fatalf("OnlyBusy = %v, want %v (%s)", got, tt.want, p.Reason)
			}
		})
	}
}
