package drain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
)

// vmOrders sort a drain's VMs; ties are broken by name.
var vmOrders = map[string]func(a, b VM) bool{
	"smallest": func(a, b VM) bool { return a.MemoryBytes < b.MemoryBytes },
	"largest":  func(a, b VM) bool { return a.MemoryBytes > b.MemoryBytes },
	"name":     func(a, b VM) bool { return false },
}

// orderVMs sorts VMs in place for the given order.
func orderVMs(vms []VM, order string) {
	less := vmOrders[order]
	sort.SliceStable(vms, func(i, j int) bool {
		a, b := vms[i], vms[j]
		if less(a, b) {
			return true
		}
		if less(b, a) {
			return false
		}
		return a.VM < b.VM
	})
}

// kindOf says how a VM in a given state leaves the host, or why it stays.
func kindOf(st virt.State, runningOnly bool) (kind, skip string) {
	switch st {
	case virt.StateRunning:
		return orchestrator.KindLive, ""
	case virt.StateShutoff:
		if runningOnly {
			return orchestrator.KindCold, "stopped, and --running-only leaves stopped VMs"
		}
		return orchestrator.KindCold, ""
	case virt.StatePaused:
		return orchestrator.KindLive, "paused: resume it (or shut it down) and drain again"
	}
	return "", fmt.Sprintf("%s: neither running nor shut off; move it by hand", st)
}

// listVMs reads the host's domains into the report, ordered.
func (d *run) listVMs() error {
	doms, err := d.srcConn.ListDomains()
	if err != nil {
		return fmt.Errorf("listing VMs on %s: %w", d.src.Name, err)
	}
	for _, di := range doms {
		kind, skip := kindOf(di.State, d.req.RunningOnly)
		v := VM{VM: di.Name, UUID: di.UUID, Kind: kind, MemoryBytes: di.MemoryBytes, State: VMPending}
		if skip != "" {
			v.State, v.Reason = VMSkipped, skip
		}
		d.rep.VMs = append(d.rep.VMs, v)
	}
	orderVMs(d.rep.VMs, d.req.Order)
	d.errs = make([]error, len(d.rep.VMs))
	d.nextTry = make([]time.Time, len(d.rep.VMs))
	d.requeues = make([]int, len(d.rep.VMs))
	d.tally()
	return nil
}

// target returns a live connection to a target host.
func (d *run) target(ctx context.Context, h inventory.Host) (virt.Host, error) {
	if conn, ok := d.conns[h.Name]; ok {
		if _, err := conn.Identity(); err == nil {
			return conn, nil
		}
		conn.Close()
		delete(d.conns, h.Name)
	}
	conn, err := d.c.DialHost(ctx, h)
	if err != nil {
		return nil, err
	}
	d.conns[h.Name] = conn
	return conn, nil
}

// place chooses a destination for VM i among the targets with the one
// pre-flight every move uses, counting moves in flight (this drain's and
// other processes') and, for a dry run, the memory planned for earlier VMs.
func (d *run) place(ctx context.Context, i int, planned map[string]uint64) (placement.Placement, error) {
	v := d.rep.VMs[i]
	dom, err := d.srcConn.LookupDomain(v.UUID)
	if err != nil {
		return placement.Placement{}, fmt.Errorf("VM %s on %s: %w", v.VM, d.src.Name, err)
	}
	info, err := dom.Info()
	if err != nil {
		return placement.Placement{}, err
	}
	spec, err := dom.Spec()
	if err != nil {
		return placement.Placement{}, err
	}
	conns := map[string]virt.Host{}
	for _, h := range d.targets {
		if conn, err := d.target(ctx, h); err == nil {
			conns[h.Name] = conn
		}
	}
	hosts := append([]inventory.Host{d.src}, d.targets...)
	cands, err := d.c.Candidates(ctx, hosts, info, spec, d.src, d.srcID, conns)
	if err != nil {
		return placement.Placement{}, err
	}
	for j := range cands {
		if err := d.limit(ctx, &cands[j], planned); err != nil {
			return placement.Placement{}, err
		}
	}
	p := placement.Place(placement.VMNeeds{Name: info.Name, MemoryBytes: info.MemoryBytes, VCPUs: info.VCPUs}, cands, d.req.Place)
	p.Source = d.src.Name
	return p, nil
}

// limit adds to a target's facts what this drain knows: the moves in flight
// into it (its own and other processes'), or in a dry run the memory the
// plan already gave it.
func (d *run) limit(ctx context.Context, cand *placement.Candidate, planned map[string]uint64) error {
	if cand.IsSource || !cand.Reachable {
		return nil
	}
	if cand.HostUUID != "" {
		d.keys[cand.Name] = cand.HostUUID
		in, _, err := d.c.Journal.InFlight(ctx, cand.HostUUID)
		if err != nil {
			return err
		}
		cand.Incoming = max(in, d.inflightTo[cand.Name])
	}
	if planned == nil {
		cand.MaxIncoming = d.req.MaxPerTarget
	} else {
		cand.ReservedBytes += planned[cand.Name]
	}
	return nil
}

// dryRun places every VM in order as if the earlier ones had moved.
func (d *run) dryRun(ctx context.Context) (*Report, error) {
	planned := map[string]uint64{}
	var errs []error
	for i := range d.rep.VMs {
		v := &d.rep.VMs[i]
		if v.State != VMPending {
			if v.State == VMSkipped {
				errs = append(errs, &VMError{VM: v.VM, State: "stays", Err: fmt.Errorf("%s", v.Reason)})
			}
			continue
		}
		p, err := d.place(ctx, i, planned)
		switch {
		case err != nil:
			v.State, v.Error = VMFailed, err.Error()
			errs = append(errs, &VMError{VM: v.VM, State: "stays", Err: err})
		case p.Host == "":
			v.State, v.Error = VMFailed, p.Reason
			errs = append(errs, &VMError{VM: v.VM, State: "stays", Err: orchestrator.PlacementRefusal(&p)})
		default:
			v.Dest, v.Reason = p.Host, p.Reason
			planned[p.Host] += v.MemoryBytes
		}
	}
	d.rep.State, d.rep.FinishedAt = StatePlanned, d.c.Now()
	d.tally()
	if len(errs) > 0 {
		var names []string
		for _, e := range errs {
			names = append(names, e.(*VMError).VM)
		}
		return d.rep, joinUnder(fmt.Errorf("%w: the plan leaves %d VM(s) on %s (%s)", ErrIncomplete, len(errs), d.src.Name, strings.Join(names, ", ")), errs)
	}
	return d.rep, nil
}

// joinUnder is head followed by each of errs, as one error value: errors.Is
// and errors.As see every one of them.
func joinUnder(head error, errs []error) error {
	return fmt.Errorf("%w\n%w", head, errors.Join(errs...))
}
