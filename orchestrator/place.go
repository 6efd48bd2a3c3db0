package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/ferryvm/ferry/virt"
)

// Place finds VM vm across the inventory and chooses a destination for it
// among every other inventory host (see the function Place for the rules).
// It changes nothing. A nil error with p.Host == "" means no host fits;
// p.Err() turns that into a refusal. Maintenance marks are read from the
// journal's state database.
func (c *Controller) Place(ctx context.Context, vm string, opt PlaceOptions) (*Placement, error) {
	if c.Journal == nil {
		return nil, errors.New("place: the controller has no journal")
	}
	m := &migration{c: c, req: Request{VM: vm}}
	if _, err := uuid.Parse(vm); err != nil && !ValidName(vm) {
		return nil, refuse(ErrInvalidRequest, nil, "VM %q is not a valid name (letters, digits, '.', '_', '-') nor a UUID", vm)
	}
	if len(c.Inventory.Hosts) == 0 {
		return nil, refuse(ErrInvalidRequest, nil, "no inventory: placement chooses among the inventory's hosts; give an inventory file (--config)")
	}
	if err := m.findSource(ctx); err != nil {
		return nil, err
	}
	defer m.srcConn.Close()
	spec, err := m.dom.Spec()
	if err != nil {
		return nil, refuse(ErrUnreachable, err, "VM %s on %s: %v", vm, m.src.Name, err)
	}
	srcID, _ := m.srcConn.Identity()
	need := VMNeeds{Name: m.info.Name, MemoryBytes: m.info.MemoryBytes, VCPUs: m.info.VCPUs}

	maint, err := OpenMaintenance(ctx, c.Journal.db)
	if err != nil {
		return nil, err
	}
	marks, err := maint.List(ctx)
	if err != nil {
		return nil, err
	}
	inMaint := map[string]MaintenanceMark{}
	for _, mk := range marks {
		inMaint[mk.Host] = mk
	}

	hosts := c.Inventory.Hosts
	cands := make([]Candidate, len(hosts))
	idx := map[string]int{}
	for i, h := range hosts {
		idx[h.Name] = i
	}
	var mu sync.Mutex
	c.forHosts(ctx, hosts, func(h HostEntry, conn virt.Host, err error) {
		cand := c.candidate(ctx, h, conn, err, spec, m.src, srcID)
		if cand.Reachable && !cand.IsSource {
			if di, lerr := findClash(conn, m.info); lerr != nil {
				cand.Reachable, cand.Error = false, lerr.Error()
			} else if di != nil {
				cand.Clash = fmt.Sprintf("a domain %q (UUID %s, %s) is already defined there", di.Name, di.UUID, di.State)
			}
		}
		if mk, ok := inMaint[h.Name]; ok {
			cand.InMaintenance, cand.MaintenanceNote = true, mk.Reason
			if cand.MaintenanceNote == "" {
				cand.MaintenanceNote = "since " + mk.Since.Local().Format("2006-01-02 15:04")
			}
		}
		mu.Lock()
		cands[idx[h.Name]] = cand
		mu.Unlock()
	})
	p := Place(need, cands, opt)
	p.Source = m.src.Name
	return &p, nil
}

// candidate gathers one host's facts for placement.
func (c *Controller) candidate(ctx context.Context, h HostEntry, conn virt.Host, dialErr error, spec virt.DomainSpec, src HostEntry, srcID virt.Identity) Candidate {
	cand := Candidate{Name: h.Name, Labels: h.Labels, HostReserveBytes: h.ReservedBytes(), IsSource: h.URI == src.URI}
	if cand.IsSource {
		cand.Reachable = true
		return cand
	}
	if dialErr != nil {
		cand.Error = dialErr.Error()
		return cand
	}
	id, err := conn.Identity()
	if err != nil {
		cand.Error = err.Error()
		return cand
	}
	if srcID.UUID != "" && id.UUID == srcID.UUID {
		// Another name for the source's libvirt host.
		cand.IsSource, cand.Reachable = true, true
		return cand
	}
	capa, err := conn.Capacity()
	if err != nil {
		cand.Error = err.Error()
		return cand
	}
	cand.Reachable = true
	cand.CPUs, cand.FreeMemoryBytes = capa.CPUs, capa.FreeMemoryBytes
	if cand.ReservedBytes, err = c.Journal.Reserved(ctx, id.UUID); err != nil {
		cand.Reachable, cand.Error = false, "reading reservations: "+err.Error()
		return cand
	}
	switch err := conn.CompareCPU(spec); {
	case err == nil:
		cand.CPUCompatible = true
	case errors.Is(err, virt.ErrNoSupport):
		cand.CPUCompatible, cand.CPUReason = true, "not checked: "+err.Error()
	default:
		cand.CPUReason = err.Error()
	}
	return cand
}
