package orchestrator

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrNoPlacement: no candidate host can take the VM (each candidate's reason
// is in the Placement).
var ErrNoPlacement = errors.New("no host can take the VM")

// VMNeeds is what a VM asks of a destination.
type VMNeeds struct {
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes"`
	VCPUs       int    `json:"vcpus"`
}

// Label is one key=value pair of --avoid-label / --prefer-label.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (l Label) String() string { return l.Key + "=" + l.Value }

// ParseLabel reads "key=value"; the key must be non-empty.
func ParseLabel(s string) (Label, error) {
	k, v, ok := strings.Cut(s, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return Label{}, refuse(ErrInvalidRequest, nil, "label %q: use key=value, e.g. rack=r1", s)
	}
	return Label{Key: k, Value: strings.TrimSpace(v)}, nil
}

// PlaceOptions steers placement.
type PlaceOptions struct {
	// Avoid rejects any host carrying one of these labels (anti-affinity).
	Avoid []Label `json:"avoid_labels,omitempty"`
	// Prefer ranks hosts carrying more of these labels first among the hosts
	// that fit (affinity); it never makes an unfit host eligible.
	Prefer []Label `json:"prefer_labels,omitempty"`
}

// Candidate is one host as placement sees it: plain facts gathered by the
// caller, so Place itself touches nothing.
type Candidate struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// FreeMemoryBytes is the host's free memory as libvirt reports it.
	FreeMemoryBytes uint64 `json:"free_memory_bytes"`
	// ReservedBytes is held by migrations in flight towards the host.
	ReservedBytes uint64 `json:"reserved_by_migrations_bytes"`
	// HostReserveBytes is kept for the host itself (inventory reserved_memory_mib).
	HostReserveBytes uint64 `json:"host_reserve_bytes"`
	CPUs             int    `json:"cpus"`
	CPUCompatible    bool   `json:"cpu_compatible"`
	CPUReason        string `json:"cpu_reason,omitempty"`
	InMaintenance    bool   `json:"in_maintenance"`
	MaintenanceNote  string `json:"maintenance_reason,omitempty"`
	Reachable        bool   `json:"reachable"`
	Error            string `json:"error,omitempty"`
	IsSource         bool   `json:"is_source"`
	// Clash describes a domain with the VM's name or UUID already defined
	// on the host (a stale copy): the move would be refused there.
	Clash string `json:"clash,omitempty"`
	// Incoming counts moves in flight into the host; at MaxIncoming (> 0)
	// the host fits but is busy for now.
	Incoming    int `json:"incoming,omitempty"`
	MaxIncoming int `json:"max_incoming,omitempty"`
}

// AvailableBytes is what a guest may use on the host: free memory minus the
// host reserve and the memory held by migrations in flight.
func (c Candidate) AvailableBytes() uint64 {
	return sub(sub(c.FreeMemoryBytes, c.HostReserveBytes), c.ReservedBytes)
}

// Verdict is one candidate's outcome.
type Verdict struct {
	Host           string `json:"host"`
	Fits           bool   `json:"fits"`
	Chosen         bool   `json:"chosen"`
	Rank           int    `json:"rank,omitempty"` // 1 = best among those that fit
	AvailableBytes uint64 `json:"available_bytes"`
	PreferMatches  int    `json:"prefer_matches,omitempty"`
	// Busy: the host would fit but has its limit of moves in flight.
	Busy   bool   `json:"busy,omitempty"`
	Reason string `json:"reason"`
}

// Placement is the decision and its explanation.
type Placement struct {
	VM       VMNeeds      `json:"vm"`
	Source   string       `json:"source,omitempty"`
	Host     string       `json:"host,omitempty"` // empty: no host fits
	Reason   string       `json:"reason"`
	Options  PlaceOptions `json:"options"`
	Verdicts []Verdict    `json:"hosts"` // ranked fits first, then rejections by name
}

// Err is nil when a host was chosen, otherwise a refusal wrapping
// ErrNoPlacement that lists every host's reason.
func (p *Placement) Err() error {
	if p.Host != "" {
		return nil
	}
	return refuse(ErrNoPlacement, nil, "%s", p.Reason)
}

// Place chooses a destination for a VM among candidates. Rules, in order:
// the source, unreachable hosts, hosts in maintenance, hosts whose CPU cannot
// run the guest, hosts already defining a domain with the VM's name or UUID,
// hosts with too few CPUs, hosts carrying an avoided label and
// hosts without enough memory (after the host reserve and reservations of
// migrations in flight) are rejected. Among the rest, hosts matching more
// --prefer-label pairs come first, then the most available memory (to spread
// load), then the name.
func Place(need VMNeeds, cands []Candidate, opt PlaceOptions) Placement {
	p := Placement{VM: need, Options: opt}
	var fits, rejected []Verdict
	for _, c := range cands {
		if c.IsSource {
			p.Source = c.Name
		}
		v := Verdict{Host: c.Name, AvailableBytes: c.AvailableBytes(), PreferMatches: matches(c.Labels, opt.Prefer)}
		if reason := reject(need, c, opt); reason != "" {
			v.Reason = reason
			v.Busy = strings.HasPrefix(reason, busyPrefix)
			rejected = append(rejected, v)
			continue
		}
		v.Fits = true
		fits = append(fits, v)
	}
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
	sort.SliceStable(rejected, func(i, j int) bool { return rejected[i].Host < rejected[j].Host })
	for i := range fits {
		v := &fits[i]
		v.Rank = i + 1
		v.Reason = fmt.Sprintf("fits: %s available after reserves, needs %s", mib(v.AvailableBytes), mib(need.MemoryBytes))
		if len(opt.Prefer) > 0 {
			v.Reason += fmt.Sprintf("; %d of %d preferred labels", v.PreferMatches, len(opt.Prefer))
		}
	}
	if len(fits) > 0 {
		best := &fits[0]
		best.Chosen = true
		p.Host = best.Host
		why := "the most memory available"
		switch {
		case len(fits) == 1:
			why = "the only host that fits"
		case best.PreferMatches > fits[1].PreferMatches:
			why = fmt.Sprintf("it matches %d preferred label(s), more than the others", best.PreferMatches)
		case best.AvailableBytes == fits[1].AvailableBytes:
			why = "the most memory available (tie broken by name)"
		}
		p.Reason = fmt.Sprintf("%s: %s (%s available, VM needs %s)", best.Host, why, mib(best.AvailableBytes), mib(need.MemoryBytes))
		best.Reason = "chosen: " + strings.TrimPrefix(best.Reason, "fits: ")
	} else {
		parts := make([]string, 0, len(rejected))
		for _, v := range rejected {
			parts = append(parts, v.Host+": "+v.Reason)
		}
		if len(parts) == 0 {
			p.Reason = fmt.Sprintf("no host can take VM %s: no candidate hosts", need.Name)
		} else {
			p.Reason = fmt.Sprintf("no host can take VM %s: %s", need.Name, strings.Join(parts, "; "))
		}
	}
	p.Verdicts = append(fits, rejected...)
	return p
}

// reject returns why c cannot take the VM, or "" if it can.
func reject(need VMNeeds, c Candidate, opt PlaceOptions) string {
	switch {
	case c.IsSource:
		return "source: the VM runs here"
	case !c.Reachable:
		if c.Error == "" {
			return "unreachable"
		}
		return "unreachable: " + c.Error
	case c.InMaintenance:
		if c.MaintenanceNote == "" {
			return "in maintenance"
		}
		return "in maintenance: " + c.MaintenanceNote
	case !c.CPUCompatible:
		if c.CPUReason == "" {
			return "CPU incompatible"
		}
		return "CPU incompatible: " + c.CPUReason
	case c.Clash != "":
		return "name clash: " + c.Clash
	case need.VCPUs > c.CPUs:
		return fmt.Sprintf("too few CPUs: VM has %d vCPUs, host %d", need.VCPUs, c.CPUs)
	}
	for _, l := range opt.Avoid {
		if v, ok := c.Labels[l.Key]; ok && v == l.Value {
			return "avoided label " + l.String()
		}
	}
	if avail := c.AvailableBytes(); need.MemoryBytes > avail {
		return fmt.Sprintf("not enough memory: VM needs %s, %s available (%s free - %s host reserve - %s held by migrations in flight)",
			mib(need.MemoryBytes), mib(avail), mib(c.FreeMemoryBytes), mib(c.HostReserveBytes), mib(c.ReservedBytes))
	}
	// Last, so a busy host is one that fits once its moves finish.
	if c.MaxIncoming > 0 && c.Incoming >= c.MaxIncoming {
		return fmt.Sprintf("%s%d move(s) in flight into it (limit %d)", busyPrefix, c.Incoming, c.MaxIncoming)
	}
	return ""
}

const busyPrefix = "busy: "

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
