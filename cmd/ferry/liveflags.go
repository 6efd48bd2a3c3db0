package main

import (
	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/orchestrator"
)

// liveFlags are the live-migration options shared by migrate and drain.
type liveFlags struct {
	maxDowntime string
	bandwidth   string
	ceiling     string
	postcopy    bool
	completion  string
	onTimeout   string
	resumeWin   string
}

// register adds the flags; prefix starts each help text (e.g. "live moves: ").
func (l *liveFlags) register(f *pflag.FlagSet, prefix string) {
	f.StringVar(&l.maxDowntime, "max-downtime", "300ms", prefix+"longest pause allowed at switchover")
	f.StringVar(&l.bandwidth, "bandwidth", "0", "bandwidth cap in MiB/s (0: unlimited)")
	f.StringVar(&l.ceiling, "max-downtime-ceiling", "1s", prefix+"highest downtime limit the policy may raise to, and longest pause it may force")
	f.BoolVar(&l.postcopy, "allow-postcopy", false, prefix+"let the policy switch to post-copy (the guest then runs on the destination while pages follow; a broken link is resumed, but if the destination host or its QEMU dies during post-copy the guest is lost)")
	f.StringVar(&l.resumeWin, "postcopy-resume-window", "2m", prefix+"how long to keep resuming a post-copy whose link broke before leaving it to 'ferry recover' (exit 4)")
	f.StringVar(&l.completion, "completion-timeout", "0", prefix+"deadline for the copy (0: 150 s per GiB of memory, at least 120 s)")
	f.StringVar(&l.onTimeout, "on-timeout", "abort", prefix+"at the completion deadline: abort, postcopy or pause")
}

// parse checks the flags and returns them as a live move's request template.
func (l *liveFlags) parse() (orchestrator.Request, error) {
	var r orchestrator.Request
	md, err := parseDuration("--max-downtime", l.maxDowntime, orchestrator.RangeMaxDowntime)
	if err != nil {
		return r, err
	}
	if md <= 0 {
		return r, usagef("--max-downtime must be more than 0, got %q", l.maxDowntime)
	}
	bw, err := parseBandwidth(l.bandwidth)
	if err != nil {
		return r, err
	}
	ceil, err := parseDuration("--max-downtime-ceiling", l.ceiling, orchestrator.RangeDowntimeCeiling)
	if err != nil {
		return r, err
	}
	if ceil > 0 && ceil < md {
		return r, usagef("--max-downtime-ceiling %s is below --max-downtime %s", l.ceiling, l.maxDowntime)
	}
	ct, err := parseDuration("--completion-timeout", l.completion, orchestrator.RangeCompletionTimeout)
	if err != nil {
		return r, err
	}
	rw, err := parseDuration("--postcopy-resume-window", l.resumeWin, orchestrator.RangePostcopyResumeWindow)
	if err != nil {
		return r, err
	}
	switch l.onTimeout {
	case "abort", "pause":
	case "postcopy":
		if !l.postcopy {
			return r, usagef("--on-timeout postcopy needs --allow-postcopy")
		}
	default:
		return r, usagef("--on-timeout %q: use abort, postcopy or pause", l.onTimeout)
	}
	return orchestrator.Request{Kind: orchestrator.KindLive, BandwidthMiBps: bw, Live: orchestrator.LiveOptions{MaxDowntime: md, DowntimeCeiling: ceil,
		AllowPostcopy: l.postcopy, CompletionTimeout: ct, OnTimeout: l.onTimeout, PostcopyResumeWindow: rw}}, nil
}
