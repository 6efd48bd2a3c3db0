package placement

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ferryvm/ferry/units"
)

// Verdict is one candidate's outcome.
type Verdict struct {
	Host           string `json:"host"`
	Fits           bool   `json:"fits"`
	Chosen         bool   `json:"chosen"`
	Rank           int    `json:"rank,omitempty"` // 1 = best among those that fit
	AvailableBytes uint64 `json:"available_bytes"`
	PreferMatches  int    `json:"prefer_matches,omitempty"`
	// Busy: the host would fit but has its limit of moves in flight.
	Busy bool `json:"busy,omitempty"`
	// Failed is the rule that rejected the host ("" when it fits).
	Failed Rule   `json:"failed,omitempty"`
	Reason string `json:"reason"`
}

// Placement is the decision and its explanation.
type Placement struct {
	VM       VMNeeds   `json:"vm"`
	Source   string    `json:"source,omitempty"`
	Host     string    `json:"host,omitempty"` // empty: no host fits
	Reason   string    `json:"reason"`
	Options  Options   `json:"options"`
	Verdicts []Verdict `json:"hosts"` // ranked fits first, then rejections by name
}

// Place chooses a destination for a VM among candidates: every candidate
// is judged (Judge: the source, unreachable hosts, hosts in maintenance,
// hosts whose CPU cannot run the guest, hosts already defining a domain
// with the VM's name or UUID, hosts with too few CPUs, hosts carrying an
// avoided label and hosts without enough memory are rejected; hosts at
// their limit of moves in flight are busy). Among the rest, hosts matching
// more --prefer-label pairs come first, then the most available memory (to
// spread load), then the name.
func Place(need VMNeeds, cands []Candidate, opt Options) Placement {
	p := Placement{VM: need, Options: opt}
	var fits, rejected []Verdict
	for _, c := range cands {
		if c.IsSource {
			p.Source = c.Name
		}
		v := Verdict{Host: c.Name, AvailableBytes: c.AvailableBytes(), PreferMatches: matches(c.Labels, opt.Prefer)}
		if f := Failed(Judge(need, c, opt)); f != nil {
			v.Failed, v.Reason, v.Busy = f.Name, f.Reason(), f.Name == RuleBusy
			rejected = append(rejected, v)
			continue
		}
		v.Fits = true
		fits = append(fits, v)
	}
	rank(fits)
	sort.SliceStable(rejected, func(i, j int) bool { return rejected[i].Host < rejected[j].Host })
	for i := range fits {
		v := &fits[i]
		v.Rank = i + 1
		v.Reason = fmt.Sprintf("fits: %s available after reserves, needs %s", units.MiB(v.AvailableBytes), units.MiB(need.MemoryBytes))
		if len(opt.Prefer) > 0 {
			v.Reason += fmt.Sprintf("; %d of %d preferred labels", v.PreferMatches, len(opt.Prefer))
		}
	}
	if len(fits) > 0 {
		p.Host, p.Reason = choose(need, fits)
	} else {
		p.Reason = noneFits(need, rejected)
	}
	p.Verdicts = append(fits, rejected...)
	return p
}

// rank orders the hosts that fit: preferred labels, then memory, then name.
func rank(fits []Verdict) {
	sort.SliceStable(fits, func(i, j int) bool {
		a, b := fits[i], fits[j]
		if a.PreferMatches != b.PreferMatches {
			return a.PreferMatches > b.PreferMatches
		}
		if a.AvailableBytes != b.AvailableBytes {
			return a.AvailableBytes > b.AvailableBytes
		}
		return a.Host < b.Host
	})
}

// choose marks the best of the ranked fits and says why it won.
func choose(need VMNeeds, fits []Verdict) (host, reason string) {
	best := &fits[0]
	best.Chosen = true
	why := "the most memory available"
	switch {
	case len(fits) == 1:
		why = "the only host that fits"
	case best.PreferMatches > fits[1].PreferMatches:
		why = fmt.Sprintf("it matches %d preferred label(s), more than the others", best.PreferMatches)
	case best.AvailableBytes == fits[1].AvailableBytes:
		why = "the most memory available (tie broken by name)"
	}
	best.Reason = "chosen: " + strings.TrimPrefix(best.Reason, "fits: ")
	return best.Host, fmt.Sprintf("%s: %s (%s available, VM needs %s)", best.Host, why, units.MiB(best.AvailableBytes), units.MiB(need.MemoryBytes))
}

func noneFits(need VMNeeds, rejected []Verdict) string {
	if len(rejected) == 0 {
		return fmt.Sprintf("no host can take VM %s: no candidate hosts", need.Name)
	}
	parts := make([]string, 0, len(rejected))
	for _, v := range rejected {
		parts = append(parts, v.Host+": "+v.Reason)
	}
	return fmt.Sprintf("no host can take VM %s: %s", need.Name, strings.Join(parts, "; "))
}

// Err is nil when a host was chosen, otherwise an error wrapping
// ErrNoPlacement whose text lists every host's reason.
func (p *Placement) Err() error {
	if p.Host != "" {
		return nil
	}
	return &noPlacement{p.Reason}
}

type noPlacement struct{ msg string }

func (e *noPlacement) Error() string { return e.msg }
func (e *noPlacement) Unwrap() error { return ErrNoPlacement }

// OnlyBusy reports whether no host fits now but some would once their
// moves in flight finish: the caller should wait rather than give up.
func (p *Placement) OnlyBusy() bool {
	if p.Host != "" {
		return false
	}
	for _, v := range p.Verdicts {
		if v.Busy {
			return true
		}
	}
	return false
}

func matches(labels map[string]string, want []Label) int {
	n := 0
	for _, l := range want {
		if v, ok := labels[l.Key]; ok && v == l.Value {
			n++
		}
	}
	return n
}
