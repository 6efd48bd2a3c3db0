package orchestrator

import (
	"context"
	"errors"
	"sync"

	"github.com/google/uuid"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
)

// PlaceVM finds VM vm across the inventory and chooses a destination for it
// among every other inventory host (placement.Place: the same pre-flight as
// a move, plus maintenance marks and labels). It changes nothing. A nil
// error with p.Host == "" means no host fits; PlacementRefusal(p) turns that into a
// refusal.
func (c *Controller) PlaceVM(ctx context.Context, vm string, opt placement.Options) (*placement.Placement, error) {
	if c.Journal == nil {
		return nil, errors.New("place: the controller has no journal")
	}
	if _, err := uuid.Parse(vm); err != nil && !inventory.ValidName(vm) {
		return nil, refuse(ErrInvalidRequest, nil, "VM %q is not a valid name (letters, digits, '.', '_', '-') nor a UUID", vm)
	}
	if len(c.Inventory.Hosts) == 0 {
		return nil, refuse(ErrInvalidRequest, nil, "no inventory: placement chooses among the inventory's hosts; give an inventory file (--config)")
	}
	m := &move{c: c, req: Request{VM: vm}}
	if err := m.findSource(ctx); err != nil {
		return nil, err
	}
	defer m.srcConn.Close()
	spec, err := m.dom.Spec()
	if err != nil {
		return nil, refuse(ErrUnreachable, err, "VM %s on %s: %v", vm, m.src.Name, err)
	}
	srcID, _ := m.srcConn.Identity()
	cands, err := c.Candidates(ctx, c.Inventory.Hosts, m.info, spec, m.src, srcID, nil)
	if err != nil {
		return nil, err
	}
	need := placement.VMNeeds{Name: m.info.Name, MemoryBytes: m.info.MemoryBytes, VCPUs: m.info.VCPUs}
	p := placement.Place(need, cands, opt)
	p.Source = m.src.Name
	return &p, nil
}

// Candidates gathers every host's facts for placing a VM, concurrently,
// with the hosts' maintenance marks. conns are connections the caller keeps
// open (by host name; others are dialled and closed here).
func (c *Controller) Candidates(ctx context.Context, hosts []inventory.Host, vm virt.DomainInfo, spec virt.DomainSpec,
	src inventory.Host, srcID virt.Identity, conns map[string]virt.Host) ([]placement.Candidate, error) {
	marks, err := c.Journal.MaintenanceByHost(ctx)
	if err != nil {
		return nil, err
	}
	cands := make([]placement.Candidate, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, derr := conns[h.Name], error(nil)
			if conn == nil && h.URI != src.URI {
				if conn, derr = c.dial(ctx, h); conn != nil {
					defer conn.Close()
				}
			}
			cands[i], errs[i] = c.gather(ctx, h, conn, derr, vm, spec, src, srcID, true)
			if mk, ok := marks[h.Name]; ok {
				cands[i].InMaintenance, cands[i].MaintenanceNote = true, maintenanceNote(mk)
			}
		}()
	}
	wg.Wait()
	return cands, errors.Join(errs...)
}

func maintenanceNote(mk journal.MaintenanceMark) string {
	if mk.Reason != "" {
		return mk.Reason
	}
	return "since " + mk.Since.Local().Format("2006-01-02 15:04")
}

// PlacementRefusal is a placement that found no host, as a refusal
// wrapping ErrNoPlacement (nil when a host was chosen).
func PlacementRefusal(p *placement.Placement) error {
	if err := p.Err(); err != nil {
		return refuse(ErrNoPlacement, err, "%s", p.Reason)
	}
	return nil
}
