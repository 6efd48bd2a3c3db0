package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
)

// The destination's pre-flight is one pure function, placement.Judge, over
// facts gathered here once, for live and cold moves, `ferry place` and
// drains alike.

// Resolve finds a host by inventory name or URI; a bad name is a refusal.
func (c *Controller) Resolve(s string) (inventory.Host, error) {
	h, err := c.Inventory.Resolve(s)
	if err == nil {
		return h, nil
	}
	if errors.Is(err, inventory.ErrUnknownHost) {
		return h, refuse(ErrUnknownHost, err, "%v", err)
	}
	return h, refuse(ErrInvalidRequest, err, "%v", err)
}

// gather collects what the pre-flight judges of host h for a VM: identity
// (another name of the source?), capacity, the memory held by moves in
// flight there, CPU compatibility (when compareCPU) and any domain with the
// VM's name or UUID. A host that does not answer is a fact too (Reachable
// false); only a failure of the state database is an error.
func (c *Controller) gather(ctx context.Context, h inventory.Host, conn virt.Host, dialErr error, vm virt.DomainInfo, spec virt.DomainSpec,
	src inventory.Host, srcID virt.Identity, compareCPU bool) (placement.Candidate, error) {
	cand := placement.Candidate{Name: h.Name, Labels: h.Labels, HostReserveBytes: h.ReservedBytes(), IsSource: h.URI == src.URI, CPUCompatible: true}
	if cand.IsSource {
		cand.Reachable = true
		return cand, nil
	}
	if dialErr != nil {
		cand.Error = dialErr.Error()
		return cand, nil
	}
	id, err := conn.Identity()
	if err != nil {
		cand.Error = fmt.Sprintf("%s: %v", h.Name, err)
		return cand, nil
	}
	cand.HostUUID = id.UUID
	if srcID.UUID != "" && id.UUID == srcID.UUID {
		// Another name for the source's libvirt host.
		cand.IsSource, cand.Reachable = true, true
		return cand, nil
	}
	capa, err := conn.Capacity()
	if err != nil {
		cand.Error = fmt.Sprintf("%s: %v", h.Name, err)
		return cand, nil
	}
	cand.Reachable = true
	cand.CPUs, cand.FreeMemoryBytes = capa.CPUs, capa.FreeMemoryBytes
	if cand.ReservedBytes, err = c.Journal.Reserved(ctx, id.UUID); err != nil {
		return cand, err
	}
	if compareCPU {
		cand.CPUCompatible, cand.CPUReason = compareGuestCPU(conn, spec)
	}
	clash, err := findClash(conn, vm)
	switch {
	case err != nil:
		cand.Reachable, cand.Error = false, fmt.Sprintf("%s: %v", h.Name, err)
	case clash != nil:
		cand.Clash = fmt.Sprintf("a domain %q (UUID %s, %s)", clash.Name, clash.UUID, clash.State)
	}
	return cand, nil
}

// compareGuestCPU asks libvirt whether the host can run the guest's CPU; a
// libvirt that cannot tell does not block the move.
func compareGuestCPU(conn virt.Host, spec virt.DomainSpec) (bool, string) {
	switch err := conn.CompareCPU(spec); {
	case err == nil:
		return true, ""
	case errors.Is(err, virt.ErrNoSupport):
		return true, "not checked: " + err.Error()
	default:
		return false, err.Error()
	}
}

// findClash returns the domain on h that has the VM's name or UUID, if any.
func findClash(h virt.Host, vm virt.DomainInfo) (*virt.DomainInfo, error) {
	for _, key := range []string{vm.Name, vm.UUID} {
		if key == "" {
			continue
		}
		d, err := h.LookupDomain(key)
		if errors.Is(err, virt.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		di, _ := d.Info()
		return &di, nil
	}
	return nil, nil
}

// judge runs the pre-flight on the destination's facts, records every
// check in the result and turns a failed one into its refusal.
func (m *move) judge(need placement.VMNeeds, cand placement.Candidate) error {
	checks := placement.Judge(need, cand, placement.Options{})
	m.res.Checks = append(m.res.Checks, checks...)
	f := placement.Failed(checks)
	if f == nil {
		return nil
	}
	m.res.Checks = m.res.Checks[:len(m.res.Checks)-1] // check() records it again with the refusal's words
	return m.check(f.Name, m.refusalFor(*f), "")
}

// refusalFor is a failed pre-flight check as the refusal of an explicit move.
func (m *move) refusalFor(f placement.Check) error {
	switch f.Name {
	case placement.RuleSource:
		return refuse(ErrSameHost, nil, "%s and %s are the same libvirt host (host UUID %s): nothing to migrate", m.src.Name, m.dst.Name, m.srcID.UUID)
	case placement.RuleReachable:
		return refuse(ErrUnreachable, nil, "destination %s", f.Detail)
	case placement.RuleCPU:
		return refuse(ErrCPUIncompatible, nil, "destination %s cannot run VM %s's CPU: %s", m.dst.Name, m.info.Name, f.Detail)
	case placement.RuleClash:
		return refuse(ErrNameClash, nil, "destination %s", f.Detail)
	case placement.RuleVCPUs:
		return refuse(ErrTooFewCPUs, nil, "VM %s cannot run on %s: %s", m.info.Name, m.dst.Name, f.Detail)
	case placement.RuleMemory:
		return refuse(ErrInsufficientMemory, nil, "not enough free memory on %s: %s", m.dst.Name, f.Detail)
	case placement.RuleBusy:
		return refuse(ErrLimit, nil, "%s: %s", m.dst.Name, f.Detail)
	}
	return refuse(ErrNoPlacement, nil, "%s: %s", m.dst.Name, f.Reason())
}
