package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/sla"
)

// slaAgentOptions are the SLA agents' settings, shared by `ferry sla
// monitor` and `ferry serve` so both take the same flags with the same checks.
type slaAgentOptions struct {
	pollInterval     time.Duration
	pollTimeout      time.Duration
	unreachableAfter int
}

func (o *slaAgentOptions) addFlags(f *pflag.FlagSet) {
	f.DurationVar(&o.pollInterval, "poll-interval", sla.DefaultPollInterval, "how often every host is polled")
	f.DurationVar(&o.pollTimeout, "poll-timeout", sla.DefaultPollTimeout, "how long one poll may take before it counts as a timeout")
	f.IntVar(&o.unreachableAfter, "unreachable-after", sla.DefaultUnreachableAfter, "consecutive failed polls that make a host unreachable")
}

// maxUnreachableAfter bounds --unreachable-after: at the longest interval
// a hundred polls is already more than three months.
const maxUnreachableAfter = 100

func (o *slaAgentOptions) validate() error {
	switch {
	case o.pollInterval < 100*time.Millisecond || o.pollInterval > sla.MaxPollInterval:
		return usagef("--poll-interval %s: give 100ms to %s", o.pollInterval, sla.MaxPollInterval)
	case o.pollTimeout <= 0:
		return usagef("--poll-timeout %s: must be positive", o.pollTimeout)
	case o.pollTimeout > o.pollInterval:
		return usagef("--poll-timeout %s is longer than --poll-interval %s: a poll must end before the next one starts", o.pollTimeout, o.pollInterval)
	case o.unreachableAfter < 1 || o.unreachableAfter > maxUnreachableAfter:
		return usagef("--unreachable-after %d: give 1 to %d", o.unreachableAfter, maxUnreachableAfter)
	}
	return nil
}

// monitor builds the SLA monitor over targets; the caller sets its
// callbacks and metrics.
func (o *slaAgentOptions) monitor(log *sla.Log, targets []sla.Target) *sla.Monitor {
	return &sla.Monitor{Log: log, Hosts: targets,
		PollInterval: o.pollInterval, PollTimeout: o.pollTimeout, UnreachableAfter: o.unreachableAfter}
}

// describe is the agents' settings for a startup line.
func (o *slaAgentOptions) describe() string {
	return fmt.Sprintf("polls every %s (timeout %s, unreachable after %d)", o.pollInterval, o.pollTimeout, o.unreachableAfter)
}

// slaTargets resolves the hosts to monitor: the ones named (inventory names
// or libvirt URIs), or every inventory host.
func slaTargets(inv *inventory.Inventory, names []string) ([]sla.Target, error) {
	var out []sla.Target
	if len(names) == 0 {
		for _, h := range inv.Hosts {
			out = append(out, sla.Target{Name: h.Name, URI: h.URI})
		}
		if len(out) == 0 {
			return nil, usagef("no hosts to monitor: the inventory is empty (give --config, or hosts as libvirt URIs)")
		}
		return out, nil
	}
	seen := map[string]bool{}
	for _, s := range names {
		h, err := inv.Resolve(s)
		if err != nil {
			return nil, err
		}
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		out = append(out, sla.Target{Name: h.Name, URI: h.URI})
	}
	return out, nil
}

// targetList names the targets for a startup line.
func targetList(targets []sla.Target) string {
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name + " (" + t.URI + ")"
	}
	return strings.Join(names, ", ")
}
