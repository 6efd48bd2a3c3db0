package placement

import (
	"strings"
	"testing"
)

// Judge applies the rules in order, stops at the first that fails, and
// skips what the candidate's facts or the VM's needs do not ask for.
func TestJudge(t *testing.T) {
	vm := VMNeeds{Name: "web", MemoryBytes: 1 << 30, VCPUs: 2}
	ok := Candidate{Name: "h", FreeMemoryBytes: 4 << 30, HostReserveBytes: 256 << 20, CPUs: 4, CPUCompatible: true, Reachable: true}
	with := func(f func(*Candidate)) Candidate { c := ok; f(&c); return c }
	for _, tt := range []struct {
		name   string
		need   VMNeeds
		cand   Candidate
		opt    Options
		failed Rule   // "" when it fits
		detail string // substring of the failed check's detail
		ran    []Rule // the checks made, in order
	}{
		{"fits", vm, ok, Options{}, "", "", []Rule{RuleSource, RuleReachable, RuleCPU, RuleClash, RuleVCPUs, RuleMemory}},
		{"source first", vm, with(func(c *Candidate) { c.IsSource, c.Reachable = true, false }), Options{}, RuleSource, "runs here", []Rule{RuleSource}},
		{"another name of the source", vm, with(func(c *Candidate) { c.IsSource, c.HostUUID = true, "u-1" }), Options{}, RuleSource, "UUID u-1", nil},
		{"unreachable", vm, with(func(c *Candidate) { c.Reachable, c.Error = false, "host h (qemu+tcp://h/system) is unreachable" }), Options{}, RuleReachable, "is unreachable", nil},
		{"maintenance only when marked", vm, with(func(c *Candidate) { c.InMaintenance, c.MaintenanceNote = true, "drain 1" }), Options{}, RuleMaintenance, "drain 1", nil},
		{"CPU", vm, with(func(c *Candidate) { c.CPUCompatible, c.CPUReason = false, "missing avx2" }), Options{}, RuleCPU, "missing avx2", nil},
		{"clash", vm, with(func(c *Candidate) { c.Clash = `a domain "web" (UUID x, shut off)` }), Options{}, RuleClash, `h already has a domain "web"`, nil},
		{"vCPUs filed as vCPUs, not memory", VMNeeds{Name: "big", MemoryBytes: 1 << 20, VCPUs: 8}, ok, Options{}, RuleVCPUs, "8 vCPUs, h only 4 CPUs", nil},
		{"avoided label", vm, with(func(c *Candidate) { c.Labels = map[string]string{"rack": "a"} }), Options{Avoid: []Label{{Key: "rack", Value: "a"}}}, RuleLabels, "rack=a", nil},
		{"memory after reserve and reservations", vm, with(func(c *Candidate) { c.ReservedBytes = 3 << 30 }), Options{}, RuleMemory, "768 MiB is available", nil},
		{"busy last", vm, with(func(c *Candidate) { c.Incoming, c.MaxIncoming = 1, 1 }), Options{}, RuleBusy, "1 move(s) in flight", nil},
		{"a stopped VM asks for no CPU nor memory", VMNeeds{Name: "off", MemoryBytes: 64 << 30, VCPUs: 64, Stopped: true},
			with(func(c *Candidate) { c.CPUCompatible = false }), Options{}, "", "", []Rule{RuleSource, RuleReachable, RuleClash}},
	} {
		checks := Judge(tt.need, tt.cand, tt.opt)
		f := Failed(checks)
		switch {
		case tt.failed == "" && f != nil:
			t.Errorf("%s: failed %s (%s), want it to fit", tt.name, f.Name, f.Detail)
		case tt.failed != "" && (f == nil || f.Name != tt.failed || !strings.Contains(f.Detail, tt.detail)):
			t.Errorf("%s: failed %+v, want %s with %q", tt.name, f, tt.failed, tt.detail)
		}
		if tt.ran != nil {
			var ran []Rule
			for _, c := range checks {
				ran = append(ran, c.Name)
			}
			if strings.Join(rules2s(ran), ",") != strings.Join(rules2s(tt.ran), ",") {
				t.Errorf("%s: checks %v, want %v", tt.name, ran, tt.ran)
			}
		}
	}
}

func rules2s(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}
