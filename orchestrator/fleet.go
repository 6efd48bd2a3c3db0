package orchestrator

import (
	"context"
	"sort"
	"sync"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// HostStatus is a host's reachability and capacity.
type HostStatus struct {
	inventory.Host
	Reachable       bool   `json:"reachable"`
	Error           string `json:"error,omitempty"`
	CPUs            int    `json:"cpus,omitempty"`
	MemoryBytes     uint64 `json:"memory_bytes,omitempty"`
	FreeMemoryBytes uint64 `json:"free_memory_bytes,omitempty"`
	ReservedBytes   uint64 `json:"reserved_by_migrations_bytes,omitempty"`
	VMsRunning      int    `json:"vms_running"`
	VMsDefined      int    `json:"vms_defined"`
	LibvirtVersion  string `json:"libvirt_version,omitempty"`
	QEMUVersion     string `json:"qemu_version,omitempty"`
	// Maintenance is set while the host is drained / in maintenance.
	Maintenance *journal.MaintenanceMark `json:"maintenance,omitempty"`
	// Transport is how ferry reaches the host: tcp, tls, ssh, ...
	Transport string `json:"transport"`
	// MigrationTLS says what the host's migration certificate directory
	// offers: "client and server", "server only", "client only", or
	// "none: ..." / "unknown: ..." with why.
	MigrationTLS string `json:"migration_tls_offer,omitempty"`
}

// tlsOfferText summarises a host's migration certificates for `ferry hosts`.
func tlsOfferText(o tlsOffer) string {
	server, client := o.has(tlsServerFiles), o.has(tlsClientFiles)
	switch {
	case o.Unknown != "":
		return "unknown: " + o.Unknown
	case server && client:
		return "client and server"
	case server:
		return "server only"
	case client:
		return "client only"
	}
	return "none: " + o.missing(tlsServerFiles)
}

// VMStatus is one domain on one host.
type VMStatus struct {
	Host string `json:"host"`
	virt.DomainInfo
}

// forHosts runs fn on a connection to each host concurrently, in inventory order.
func (c *Controller) forHosts(ctx context.Context, hosts []inventory.Host, fn func(inventory.Host, virt.Host, error)) {
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.dial(ctx, h)
			fn(h, conn, err)
			if conn != nil {
				conn.Close()
			}
		}()
	}
	wg.Wait()
}

// Hosts reports every inventory host (or the named ones).
func (c *Controller) Hosts(ctx context.Context, names []string) ([]HostStatus, error) {
	hosts, err := c.selectHosts(names)
	if err != nil {
		return nil, err
	}
	out := make([]HostStatus, len(hosts))
	idx := map[string]int{}
	for i, h := range hosts {
		idx[h.Name] = i
	}
	var mu sync.Mutex
	c.forHosts(ctx, hosts, func(h inventory.Host, conn virt.Host, err error) {
		st := HostStatus{Host: h, Transport: virt.Transport(h.URI)}
		if err == nil {
			var capa virt.Capacity
			if capa, err = conn.Capacity(); err == nil {
				st.Reachable = true
				st.CPUs, st.MemoryBytes, st.FreeMemoryBytes = capa.CPUs, capa.MemoryBytes, capa.FreeMemoryBytes
				st.LibvirtVersion, st.QEMUVersion = capa.LibvirtVersion, capa.QEMUVersion
				if doms, derr := conn.ListDomains(); derr == nil {
					st.VMsDefined = len(doms)
					for _, d := range doms {
						if d.State.Active() {
							st.VMsRunning++
						}
					}
				}
				if h.TLSPolicy() != inventory.TLSOff {
					st.MigrationTLS = tlsOfferText(probeTLS(conn, h.TLSDir()))
				}
				if id, ierr := conn.Identity(); ierr == nil && c.Journal != nil {
					st.ReservedBytes, _ = c.Journal.Reserved(ctx, id.UUID)
				}
			}
		}
		if err != nil {
			st.Error = err.Error()
		}
		mu.Lock()
		out[idx[h.Name]] = st
		mu.Unlock()
	})
	if c.Journal != nil {
		marks, err := c.Journal.Maintenance(ctx)
		if err != nil {
			return nil, err
		}
		for _, mk := range marks {
			if i, ok := idx[mk.Host]; ok {
				out[i].Maintenance = &mk
			}
		}
	}
	return out, nil
}

// VMs lists the domains of every inventory host (or the named ones).
func (c *Controller) VMs(ctx context.Context, names []string) ([]VMStatus, []HostStatus, error) {
	hosts, err := c.selectHosts(names)
	if err != nil {
		return nil, nil, err
	}
	var (
		mu     sync.Mutex
		vms    []VMStatus
		failed []HostStatus
	)
	c.forHosts(ctx, hosts, func(h inventory.Host, conn virt.Host, err error) {
		var doms []virt.DomainInfo
		if err == nil {
			doms, err = conn.ListDomains()
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, HostStatus{Host: h, Error: err.Error()})
			return
		}
		for _, d := range doms {
			vms = append(vms, VMStatus{Host: h.Name, DomainInfo: d})
		}
	})
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Host != vms[j].Host {
			return vms[i].Host < vms[j].Host
		}
		return vms[i].Name < vms[j].Name
	})
	return vms, failed, nil
}

func (c *Controller) selectHosts(names []string) ([]inventory.Host, error) {
	if len(names) == 0 {
		if len(c.Inventory.Hosts) == 0 {
			return nil, refuse(ErrInvalidRequest, nil, "the inventory lists no hosts: give --config with an inventory file or --host with a libvirt URI")
		}
		return c.Inventory.Hosts, nil
	}
	var out []inventory.Host
	for _, n := range names {
		h, err := c.Inventory.Resolve(n)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}
