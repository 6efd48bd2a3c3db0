package orchestrator

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ferryvm/ferry/virt"
)

// Observed is what one host says about the migrating VM.
type Observed struct {
	Present    bool
	State      virt.State
	Reason     string
	Persistent bool
}

func (o Observed) live() bool { return o.Present && o.State.Active() }

func (o Observed) String() string {
	if !o.Present {
		return "absent"
	}
	s := string(o.State)
	if o.Reason != "" {
		s += " (" + o.Reason + ")"
	}
	if !o.Persistent {
		s += ", transient"
	}
	return s
}

// ConvergeStep is one step towards exactly one running copy (not a
// precopy.Action, which steers a running job).
type ConvergeStep string

// Steps, applied in the order decide returns them: the losing copy is
// always stopped before the winner is resumed, so two never run at once.
const (
	DestroySource  ConvergeStep = "destroy-source"
	UndefineSource ConvergeStep = "undefine-source"
	DestroyDest    ConvergeStep = "destroy-destination"
	UndefineDest   ConvergeStep = "undefine-destination"
	ResumeSource   ConvergeStep = "resume-source"
	ResumeDest     ConvergeStep = "resume-destination"
	StartSource    ConvergeStep = "start-source"
	StartDest      ConvergeStep = "start-destination"
)

// Decision says which copy is kept and how to get there.
type Decision struct {
	Keep    string // "source", "destination", or "" when no automatic decision is safe
	Actions []ConvergeStep
	Note    string
}

func postcopyReason(r string) bool { return strings.HasPrefix(r, "postcopy") }

// decide is the convergence rule shared by rollback, commitment and recover
// (like Ganeti's migrate --cleanup): from what both hosts report and whether
// the journal reached commitment, pick the copy to keep. It is pure so every
// combination is table-tested.
func decide(src, dst Observed, committed bool) Decision {
	switch {
	case src.live() && !dst.live():
		d := Decision{Keep: "source"}
		if dst.Present {
			d.Actions = append(d.Actions, UndefineDest) // a persisted leftover of our migration
		}
		if src.State == virt.StatePaused && !postcopyReason(src.Reason) && src.Reason != "user" {
			d.Actions = append(d.Actions, ResumeSource)
		}
		if postcopyReason(src.Reason) {
			return Decision{Note: "source paused in post-copy with no destination copy: the guest state is split, resolve by hand"}
		}
		return d
	case !src.live() && dst.live():
		d := Decision{Keep: "destination"}
		if src.Present {
			d.Actions = append(d.Actions, UndefineSource)
		}
		if dst.State == virt.StatePaused && dst.Reason != "user" {
			if dst.Reason == "postcopy-failed" {
				return Decision{Note: "destination paused after a failed post-copy: the guest state is lost in transit, resolve by hand"}
			}
			d.Actions = append(d.Actions, ResumeDest)
		}
		return d
	case src.live() && dst.live():
		if postcopyReason(src.Reason) || postcopyReason(dst.Reason) {
			if dst.State == virt.StateRunning && !postcopyReason(src.Reason) {
				// The destination runs on its own: post-copy finished there.
				return Decision{Keep: "destination", Actions: []ConvergeStep{DestroySource, UndefineSource}}
			}
			return Decision{Note: fmt.Sprintf("post-copy interrupted (source %s, destination %s): the guest state is split between hosts, resolve by hand", src, dst)}
		}
		// The destination took over when it runs and the source sits paused
		// by the migration, or once the journal committed.
		if committed || (dst.State == virt.StateRunning && src.State == virt.StatePaused) {
			return Decision{Keep: "destination", Actions: []ConvergeStep{DestroySource, UndefineSource}}
		}
		d := Decision{Keep: "source", Actions: []ConvergeStep{DestroyDest}}
		if dst.Persistent {
			d.Actions = append(d.Actions, UndefineDest)
		}
		if src.State == virt.StatePaused && src.Reason != "user" {
			d.Actions = append(d.Actions, ResumeSource)
		}
		return d
	default: // no running copy anywhere: boot one from its disks
		note := "the VM was running nowhere; booted again from its disks (memory state lost)"
		switch {
		case committed && dst.Present:
			d := Decision{Keep: "destination", Actions: []ConvergeStep{StartDest}, Note: note}
			if src.Present {
				d.Actions = append([]ConvergeStep{UndefineSource}, d.Actions...)
			}
			return d
		case src.Present:
			d := Decision{Keep: "source", Actions: []ConvergeStep{StartSource}, Note: note}
			if dst.Present {
				d.Actions = append([]ConvergeStep{UndefineDest}, d.Actions...)
			}
			return d
		case dst.Present:
			return Decision{Keep: "destination", Actions: []ConvergeStep{StartDest}, Note: note}
		}
		return Decision{Note: "the VM is defined on neither host; define it again from the XML kept in the journal (ferry show ID --xml)"}
	}
}

// observe looks the VM up by UUID on a host.
func observe(h virt.Host, uuid string) (Observed, virt.Domain, error) {
	d, err := h.LookupDomain(uuid)
	if errors.Is(err, virt.ErrNotFound) {
		return Observed{}, nil, nil
	}
	if err != nil {
		return Observed{}, nil, err
	}
	info, err := d.Info()
	if errors.Is(err, virt.ErrNotFound) {
		return Observed{}, nil, nil
	}
	if err != nil {
		return Observed{}, nil, err
	}
	return Observed{Present: true, State: info.State, Reason: info.Reason, Persistent: info.Persistent}, d, nil
}

// apply carries out a decision's actions in order.
func apply(d Decision, srcDom, dstDom virt.Domain) error {
	for _, a := range d.Actions {
		var err error
		switch a {
		case DestroySource:
			err = srcDom.Destroy()
		case UndefineSource:
			// Live migration shares the NVRAM file with the destination: keep it.
			err = srcDom.Undefine(true)
		case DestroyDest:
			err = dstDom.Destroy()
		case UndefineDest:
			err = dstDom.Undefine(true)
		case ResumeSource:
			err = srcDom.Resume()
		case ResumeDest:
			err = dstDom.Resume()
		case StartSource:
			err = srcDom.Start()
		case StartDest:
			err = dstDom.Start()
		}
		// A domain that vanished or already is in the wanted state is fine.
		if err != nil && !errors.Is(err, virt.ErrNotFound) && !errors.Is(err, virt.ErrInvalidState) {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

// preferDecision is the operator's override (`ferry recover --prefer`) for a
// row ferry cannot decide itself: keep the preferred copy, stop and remove
// the other where that host answers, and run the preferred one. It refuses
// when the preferred host does not answer or has no copy to run.
func preferDecision(prefer string, src, dst Observed, srcKnown, dstKnown bool) (Decision, error) {
	type side struct {
		o                        Observed
		known                    bool
		name                     string
		destroy, undefine        ConvergeStep
		resume, start            ConvergeStep
		otherDestroy, otherUndef ConvergeStep
		other                    Observed
		otherKnown               bool
	}
	var s side
	switch prefer {
	case "source":
		s = side{o: src, known: srcKnown, name: "source", resume: ResumeSource, start: StartSource,
			otherDestroy: DestroyDest, otherUndef: UndefineDest, other: dst, otherKnown: dstKnown}
	case "destination":
		s = side{o: dst, known: dstKnown, name: "destination", resume: ResumeDest, start: StartDest,
			otherDestroy: DestroySource, otherUndef: UndefineSource, other: src, otherKnown: srcKnown}
	default:
		return Decision{}, fmt.Errorf("%w: prefer %q: give source or destination", ErrInvalidRequest, prefer)
	}
	if !s.known {
		return Decision{}, fmt.Errorf("%w: the %s does not answer: --prefer %s needs it", ErrUnreachable, s.name, s.name)
	}
	if !s.o.Present {
		return Decision{}, fmt.Errorf("%w: the VM is not defined on the %s: --prefer %s has nothing to keep", ErrInvalidRequest, s.name, s.name)
	}
	d := Decision{Keep: s.name, Note: "decided by --prefer " + s.name}
	if s.otherKnown && s.other.Present {
		if s.other.live() {
			d.Actions = append(d.Actions, s.otherDestroy)
		}
		d.Actions = append(d.Actions, s.otherUndef)
	} else if !s.otherKnown {
		d.Note += "; the other host did not answer: remove its copy there before it starts (virsh destroy/undefine)"
	}
	switch {
	case !s.o.live():
		d.Actions = append(d.Actions, s.start)
		d.Note += "; booted from its disks (memory state lost)"
	case s.o.State == virt.StatePaused && s.o.Reason != "user":
		d.Actions = append(d.Actions, s.resume)
	}
	return d, nil
}
