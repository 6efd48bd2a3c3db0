package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/virt"
)

// found is a VM's definition on one host.
type found struct {
	h    inventory.Host
	conn virt.Host
	dom  virt.Domain
	info virt.DomainInfo
	err  error
}

// findSource locates the VM: on --from, or by asking every inventory host.
func (m *move) findSource(ctx context.Context) error {
	if m.src.URI != "" {
		return m.lookupOnSource(ctx)
	}
	if len(m.c.Inventory.Hosts) == 0 {
		return refuse(ErrInvalidRequest, nil, "no inventory to search for VM %q: give --from HOST (a libvirt URI) or an inventory file (--config)", m.req.VM)
	}
	hits, unreachable := m.c.lookupEverywhere(ctx, m.req.VM)
	pick, err := m.pickActive(ctx, hits)
	for i := range hits {
		if pick != &hits[i] {
			hits[i].conn.Close()
		}
	}
	if err != nil {
		return err
	}
	if pick == nil {
		msg := fmt.Sprintf("VM %q not found on any inventory host (%v)", m.req.VM, m.c.Inventory.Names())
		if len(unreachable) > 0 {
			msg += fmt.Sprintf("; unreachable: %v", unreachable)
		}
		return refuse(ErrUnknownVM, nil, "%s", msg)
	}
	m.src, m.srcConn, m.dom, m.info = pick.h, pick.conn, pick.dom, pick.info
	return nil
}

// lookupOnSource finds the VM on the host --from named.
func (m *move) lookupOnSource(ctx context.Context) error {
	conn, err := m.c.dial(ctx, m.src)
	if err != nil {
		return err
	}
	m.srcConn = conn
	dom, err := conn.LookupDomain(m.req.VM)
	if err != nil {
		if errors.Is(err, virt.ErrNotFound) {
			return refuse(ErrUnknownVM, err, "VM %q not found on %s", m.req.VM, m.src.Name)
		}
		return refuse(ErrUnreachable, err, "looking up VM %q on %s: %v", m.req.VM, m.src.Name, err)
	}
	m.dom = dom
	if m.info, err = dom.Info(); err != nil {
		return refuse(ErrUnreachable, err, "VM %q on %s: %v", m.req.VM, m.src.Name, err)
	}
	return nil
}

// lookupEverywhere asks every inventory host at once for the VM: the hosts
// that define it (connections open) and the names of those that did not
// answer.
func (c *Controller) lookupEverywhere(ctx context.Context, vm string) (hits []found, unreachable []string) {
	results := make([]found, len(c.Inventory.Hosts))
	var wg sync.WaitGroup
	for i, h := range c.Inventory.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := found{h: h}
			r.conn, r.err = c.dial(ctx, h)
			if r.err == nil {
				r.dom, r.err = r.conn.LookupDomain(vm)
				if r.err == nil {
					r.info, r.err = r.dom.Info()
				}
			}
			results[i] = r
		}()
	}
	wg.Wait()
	for _, r := range results {
		switch {
		case r.err == nil:
			hits = append(hits, r)
			continue
		case errors.Is(r.err, virt.ErrNotFound):
		default:
			unreachable = append(unreachable, r.h.Name)
		}
		if r.conn != nil {
			r.conn.Close()
		}
	}
	return hits, unreachable
}

// pickActive chooses among several definitions (a stale shut-off copy): the
// active one is the source; two active ones are refused.
func (m *move) pickActive(ctx context.Context, hits []found) (*found, error) {
	var pick *found
	for i := range hits {
		if !hits[i].info.State.Active() {
			continue
		}
		if pick != nil {
			if open, _ := m.c.Journal.OpenForVM(ctx, hits[i].info.UUID); open != nil {
				return nil, refuse(ErrBusy, nil, "VM %s is being migrated from %s to %s by migration %s (started %s); wait for it, or run `ferry recover` if its ferry process is gone",
					m.req.VM, open.Source, open.Dest, short(open.ID), open.StartedAt.Local().Format("15:04:05"))
			}
			return nil, refuse(ErrBusy, nil, "VM %s is active on both %s and %s; resolve that first (ferry recover, or virsh)", m.req.VM, pick.h.Name, hits[i].h.Name)
		}
		pick = &hits[i]
	}
	if pick == nil && len(hits) > 0 {
		pick = &hits[0]
	}
	return pick, nil
}
