package placement

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferryvm/ferry/units"
)

// VMNeeds is what a VM asks of a destination.
type VMNeeds struct {
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes"`
	VCPUs       int    `json:"vcpus"`
	// Stopped: the VM is only defined there, not run (a cold move that
	// does not start it), so its CPU and memory are not asked for.
	Stopped bool `json:"stopped,omitempty"`
}

// Label is one key=value pair of --avoid-label / --prefer-label.
type Label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (l Label) String() string { return l.Key + "=" + l.Value }

// Errors of this package.
var (
	// ErrBadLabel: a label that is not key=value.
	ErrBadLabel = errors.New("label must be key=value")
	// ErrNoPlacement: no candidate host can take the VM (each candidate's
	// reason is in the Placement).
	ErrNoPlacement = errors.New("no host can take the VM")
)

// ParseLabel reads "key=value"; the key must be non-empty.
func ParseLabel(s string) (Label, error) {
	k, v, ok := strings.Cut(s, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return Label{}, fmt.Errorf("%w: label %q: use key=value, e.g. rack=r1", ErrBadLabel, s)
	}
	return Label{Key: k, Value: strings.TrimSpace(v)}, nil
}

// Options steer placement.
type Options struct {
	// Avoid rejects any host carrying one of these labels (anti-affinity).
	Avoid []Label `json:"avoid_labels,omitempty"`
	// Prefer ranks hosts carrying more of these labels first among the hosts
	// that fit (affinity); it never makes an unfit host eligible.
	Prefer []Label `json:"prefer_labels,omitempty"`
}

// Candidate is one host as the pre-flight sees it: plain facts gathered by
// the caller, so judging touches nothing. Facts a caller did not gather
// keep their zero value and pass (no maintenance mark, no limit).
type Candidate struct {
	Name     string            `json:"name"`
	HostUUID string            `json:"host_uuid,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
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
	// IsSource: the VM's own host (by inventory entry or libvirt host UUID).
	IsSource bool `json:"is_source"`
	// Clash describes a domain with the VM's name or UUID already defined
	// on the host (`a domain "web" (UUID …, shut off)`).
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

func sub(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// Rule names one pre-flight check; the names are those results and the
// journal show.
type Rule string

// The rules, in the order Judge applies them.
const (
	RuleSource      Rule = "distinct-hosts"
	RuleReachable   Rule = "destination-reachable"
	RuleMaintenance Rule = "maintenance"
	RuleCPU         Rule = "cpu-compatible"
	RuleClash       Rule = "no-name-clash"
	RuleVCPUs       Rule = "vcpus"
	RuleLabels      Rule = "labels"
	RuleMemory      Rule = "memory"
	RuleBusy        Rule = "limits"
)

// label is how a verdict names a failed rule.
var label = map[Rule]string{
	RuleSource: "source", RuleReachable: "unreachable", RuleMaintenance: "in maintenance",
	RuleCPU: "CPU incompatible", RuleClash: "name clash", RuleVCPUs: "too few CPUs",
	RuleLabels: "avoided label", RuleMemory: "not enough memory", RuleBusy: "busy",
}

// Check is one pre-flight check and its result.
type Check struct {
	Name   Rule   `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Judge runs the pre-flight checks of one candidate in order and stops at
// the first that fails: the checks passed, then the failed one (OK false)
// if any. A rule whose facts the candidate lacks is skipped.
func Judge(need VMNeeds, c Candidate, opt Options) []Check {
	var out []Check
	for _, r := range rules {
		ok, detail, applies := r.check(need, c, opt)
		if !applies {
			continue
		}
		out = append(out, Check{Name: r.rule, OK: ok, Detail: detail})
		if !ok {
			break
		}
	}
	return out
}

// Failed is the failed check of a Judge result, or nil.
func Failed(checks []Check) *Check {
	if n := len(checks); n > 0 && !checks[n-1].OK {
		return &checks[n-1]
	}
	return nil
}

type rule struct {
	rule  Rule
	check func(need VMNeeds, c Candidate, opt Options) (ok bool, detail string, applies bool)
}

var rules = []rule{
	{RuleSource, func(_ VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if !c.IsSource {
			return true, "not the VM's host", true
		}
		if c.HostUUID != "" {
			return false, fmt.Sprintf("the VM runs here (%s is another name of its libvirt host, UUID %s)", c.Name, c.HostUUID), true
		}
		return false, "the VM runs here", true
	}},
	{RuleReachable, func(_ VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if c.Reachable {
			return true, c.Name + " answers", true
		}
		if c.Error == "" {
			return false, c.Name + " does not answer", true
		}
		return false, c.Error, true
	}},
	{RuleMaintenance, func(_ VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if !c.InMaintenance {
			return true, "", false
		}
		return false, c.MaintenanceNote, true
	}},
	{RuleCPU, func(need VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if need.Stopped {
			return true, "", false
		}
		if !c.CPUCompatible {
			return false, c.CPUReason, true
		}
		if c.CPUReason != "" {
			return true, c.CPUReason, true
		}
		return true, "guest CPU runs on " + c.Name, true
	}},
	{RuleClash, func(_ VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if c.Clash != "" {
			return false, fmt.Sprintf("%s already has %s; undefine it there or rename the VM", c.Name, c.Clash), true
		}
		return true, "no domain with that name or UUID", true
	}},
	{RuleVCPUs, func(need VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if need.Stopped {
			return true, "", false
		}
		if need.VCPUs > c.CPUs {
			return false, fmt.Sprintf("the VM has %d vCPUs, %s only %d CPUs", need.VCPUs, c.Name, c.CPUs), true
		}
		return true, fmt.Sprintf("%d vCPUs of %d CPUs", need.VCPUs, c.CPUs), true
	}},
	{RuleLabels, func(_ VMNeeds, c Candidate, opt Options) (bool, string, bool) {
		if len(opt.Avoid) == 0 {
			return true, "", false
		}
		for _, l := range opt.Avoid {
			if v, ok := c.Labels[l.Key]; ok && v == l.Value {
				return false, l.String(), true
			}
		}
		return true, "no avoided label", true
	}},
	{RuleMemory, func(need VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if need.Stopped {
			return true, "", false
		}
		avail := c.AvailableBytes()
		detail := fmt.Sprintf("the VM needs %s, %s is available on %s (%s free - %s host reserve - %s held by migrations in flight)",
			units.MiB(need.MemoryBytes), units.MiB(avail), c.Name, units.MiB(c.FreeMemoryBytes), units.MiB(c.HostReserveBytes), units.MiB(c.ReservedBytes))
		return need.MemoryBytes <= avail, detail, true
	}},
	// Last, so a busy host is one that fits once its moves finish.
	{RuleBusy, func(_ VMNeeds, c Candidate, _ Options) (bool, string, bool) {
		if c.MaxIncoming <= 0 {
			return true, "", false
		}
		if c.Incoming >= c.MaxIncoming {
			return false, fmt.Sprintf("%d move(s) in flight into it (limit %d)", c.Incoming, c.MaxIncoming), true
		}
		return true, fmt.Sprintf("%d of %d moves in flight into it", c.Incoming, c.MaxIncoming), true
	}},
}

// Reason is a failed check as a verdict says it: "not enough memory: …",
// "avoided label rack=a1".
func (c Check) Reason() string {
	switch {
	case c.OK:
		return ""
	case c.Detail == "":
		return label[c.Name]
	case c.Name == RuleLabels:
		return label[c.Name] + " " + c.Detail
	}
	return label[c.Name] + ": " + c.Detail
}
