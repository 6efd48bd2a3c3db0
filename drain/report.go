package drain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// tally recomputes the counters; d.mu is held (or the run is single-threaded).
func (d *run) tally() {
	r := d.rep
	r.Moved, r.Failed, r.Left, r.SentBytes = 0, 0, 0, 0
	for _, v := range r.VMs {
		r.SentBytes += v.SentBytes
		switch v.State {
		case VMMoved:
			r.Moved++
		case VMFailed:
			r.Failed++
		case VMPending, VMWaiting, VMMoving:
			r.Left++
		}
	}
}

// changed publishes the report: to Progress always, to the store at most
// once a second unless force.
func (d *run) changed(ctx context.Context, force bool) {
	d.mu.Lock()
	d.tally()
	snap := *d.rep
	snap.VMs = append([]VM(nil), d.rep.VMs...)
	save := d.persisted && (force || time.Since(d.lastSave) >= time.Second)
	if save {
		d.lastSave = time.Now()
	}
	d.mu.Unlock()
	if d.req.Progress != nil {
		d.req.Progress(snap)
	}
	if save {
		if err := saveDrain(context.WithoutCancel(ctx), d.c.Journal, &snap); err != nil {
			d.log.WithError(err).Error("saving the drain report")
		}
	}
}

// end lists what is left on the host, sets the final state and error: the
// drain's verdict joined with each remaining VM's *VMError.
func (d *run) end(ctx context.Context, failure error) (*Report, error) {
	bg := context.WithoutCancel(ctx)
	r := d.rep
	left, lerr := d.srcConn.ListDomains()
	d.mu.Lock()
	if d.cancelled {
		// Requeued after the cancel: they will not start either.
		for i := range r.VMs {
			if v := &r.VMs[i]; v.State == VMPending || v.State == VMWaiting {
				v.State, v.Reason = VMNotStarted, "drain cancelled before its turn"
			}
		}
	}
	var vmErrs []error
	r.Remaining, vmErrs = d.remaining(left)
	r.Empty = lerr == nil && len(r.Remaining) == 0 && failure == nil
	r.FinishedAt = d.c.Now()
	switch {
	case r.Empty:
		r.State = StateDone
	case d.cancelled:
		r.State = StateCancelled
	default:
		r.State = StateIncomplete
	}
	if failure != nil {
		r.Error = failure.Error()
	} else if lerr != nil {
		r.Error = "listing what is left: " + lerr.Error()
	}
	d.tally()
	d.mu.Unlock()
	d.changed(bg, true)
	d.log.WithFields(map[string]any{"state": r.State, "moved": r.Moved, "failed": r.Failed}).Info("drain finished")
	switch {
	case failure != nil:
		return r, failure
	case r.Empty:
		return r, nil
	}
	kind := ErrIncomplete
	if d.cancelled {
		kind = ErrCancelled
	}
	head := fmt.Errorf("%w: %s still has %d VM(s)", kind, r.Host, len(r.Remaining))
	if lerr != nil {
		vmErrs = append(vmErrs, fmt.Errorf("listing what is left: %w", lerr))
	}
	return r, joinUnder(head, vmErrs)
}

// remaining names what is still on the host and why, as the report says it
// and as error values; d.mu is held.
func (d *run) remaining(left []virt.DomainInfo) ([]string, []error) {
	byName := map[string]int{}
	for i, v := range d.rep.VMs {
		byName[v.VM] = i
	}
	var names []string
	var errs []error
	for _, di := range left {
		if d.req.RunningOnly && !di.State.Active() {
			continue
		}
		var why error = errors.New("appeared during the drain")
		if i, ok := byName[di.Name]; ok {
			v := d.rep.VMs[i]
			if why = d.errs[i]; why == nil {
				why = errors.New(firstNonEmpty(v.Error, v.Reason, v.State))
			}
		}
		e := &VMError{VM: di.Name, State: string(di.State), Err: why}
		names, errs = append(names, e.Error()), append(errs, e)
	}
	sort.Strings(names)
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return names, errs
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
