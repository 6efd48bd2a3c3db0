// Package virttest provides in-memory fakes of virt.Host, virt.Domain and
// virt.StorageHost for unit tests of ferry's logic (pre-flight checks,
// reservations, rollback decisions, cold moves). They model state, not
// libvirt's protocol; end-to-end tests use the real lab instead.
//
// Calls that can fail on a real host can be made to fail here through
// function fields (IdentityFn, CapacityFn, CPUFn, InfoFn, XMLFn, MigrateFn,
// Storage.CallFn): nil means the fake's normal behaviour.
package virttest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// Cluster is a set of fake hosts that can migrate domains between each other.
type Cluster struct {
	mu    sync.Mutex
	Hosts map[string]*Host // by URI
}

// NewCluster returns an empty cluster.
func NewCluster() *Cluster { return &Cluster{Hosts: map[string]*Host{}} }

// AddHost adds a host with the given capacity.
func (c *Cluster) AddHost(uri string, capacity virt.Capacity) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &Host{cluster: c, uri: uri, Cap: capacity, UUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", len(c.Hosts)+1), Domains: map[string]*Domain{}}
	c.Hosts[uri] = h
	return h
}

// Dial implements the orchestrator's dial function over the fake cluster.
func (c *Cluster) Dial(_ context.Context, uri string) (virt.Host, error) {
	if err := virt.ValidateURI(uri); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.Hosts[uri]
	if !ok || h.Down {
		return nil, &virt.Error{Op: "connect " + uri, Sentinel: virt.ErrUnreachable, Message: "connection refused"}
	}
	if h.storage != nil {
		return &storageHost{Host: h, Storage: h.storage}, nil
	}
	return h, nil
}

// storageHost is what Dial returns for a host with storage attached: one
// value that is both a virt.Host and a virt.StorageHost, which is how
// virt.StorageOf recognises a host with a storage API. A host without
// storage stays a plain *Host, which virt.StorageOf refuses.
type storageHost struct {
	*Host
	*Storage
}

// Host is a fake libvirt host. Its fields may be changed by tests.
type Host struct {
	cluster *Cluster
	uri     string
	Cap     virt.Capacity
	UUID    string
	Down    bool
	// CPUFn, when set, answers CompareCPU.
	CPUFn func(virt.DomainSpec) error
	// IdentityFn and CapacityFn, when set, answer Identity and Capacity:
	// they get what the fake would answer, so a hook can fail some calls
	// and pass the others through.
	IdentityFn func(virt.Identity) (virt.Identity, error)
	CapacityFn func(virt.Capacity) (virt.Capacity, error)
	Domains    map[string]*Domain // by name

	subs    []*subscription // guarded by cluster.mu
	evMu    sync.Mutex      // serialises Emit, Disconnect and stream closes
	storage *Storage        // guarded by cluster.mu
}

// AttachStorage gives the host a storage API: from now on Cluster.Dial
// returns a host virt.StorageOf accepts, backed by s.
func (h *Host) AttachStorage(s *Storage) {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	h.storage = s
}

// AddDomain defines a domain on the host in the given state.
func (h *Host) AddDomain(name, uuid string, memBytes uint64, state virt.State) *Domain {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	d := &Domain{host: h, info: virt.DomainInfo{Name: name, UUID: uuid, State: state, MemoryBytes: memBytes, VCPUs: 1, Persistent: true}}
	h.Domains[name] = d
	return d
}

func (h *Host) URI() string  { return h.uri }
func (h *Host) Close() error { return nil }
func (h *Host) Identity() (virt.Identity, error) {
	id := virt.Identity{Hostname: h.uri, UUID: h.UUID, Arch: "x86_64"}
	if h.IdentityFn != nil {
		return h.IdentityFn(id)
	}
	return id, nil
}

func (h *Host) Capacity() (virt.Capacity, error) {
	if h.CapacityFn != nil {
		return h.CapacityFn(h.Cap)
	}
	return h.Cap, nil
}

func (h *Host) ListDomains() ([]virt.DomainInfo, error) {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	var out []virt.DomainInfo
	for _, d := range h.Domains {
		out = append(out, d.info)
	}
	return out, nil
}

func (h *Host) LookupDomain(key string) (virt.Domain, error) {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	if h.Down {
		return nil, &virt.Error{Op: "domain " + key, Sentinel: virt.ErrUnreachable, Message: "client socket is closed"}
	}
	for _, d := range h.Domains {
		if d.info.Name == key || d.info.UUID == key {
			return d, nil
		}
	}
	return nil, &virt.Error{Op: "domain " + key, Sentinel: virt.ErrNotFound, Message: "Domain not found"}
}

func (h *Host) CompareCPU(s virt.DomainSpec) error {
	if h.CPUFn != nil {
		return h.CPUFn(s)
	}
	return nil
}

// Subscribe delivers what Emit and Disconnect inject, in order, until ctx
// ends or Disconnect closes the stream.
func (h *Host) Subscribe(ctx context.Context) (<-chan virt.Event, error) {
	h.cluster.mu.Lock()
	if h.Down {
		h.cluster.mu.Unlock()
		return nil, &virt.Error{Op: "subscribe to " + h.uri, Sentinel: virt.ErrUnreachable, Message: "client socket is closed"}
	}
	s := &subscription{ch: make(chan virt.Event, 256), done: make(chan struct{})}
	h.subs = append(h.subs, s)
	h.cluster.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		h.evMu.Lock()
		defer h.evMu.Unlock()
		h.cluster.mu.Lock()
		h.dropSub(s)
		h.cluster.mu.Unlock()
		if !s.closed {
			s.closed = true
			close(s.ch)
		}
	}()
	return s.ch, nil
}

// subscription is one Subscribe call of a fake host.
type subscription struct {
	ch     chan virt.Event
	done   chan struct{}
	once   sync.Once
	closed bool // guarded by Host.evMu
}

func (h *Host) dropSub(s *subscription) {
	for i, x := range h.subs {
		if x == s {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			return
		}
	}
}

// Emit delivers ev to every current subscriber (Host defaults to the URI, At
// to now). It blocks while a subscriber's buffer of 256 events is full.
func (h *Host) Emit(ev virt.Event) {
	if ev.Host == "" {
		ev.Host = h.uri
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	h.evMu.Lock()
	defer h.evMu.Unlock()
	h.cluster.mu.Lock()
	subs := append([]*subscription(nil), h.subs...)
	h.cluster.mu.Unlock()
	for _, s := range subs {
		if !s.closed {
			s.ch <- ev
		}
	}
}

// Disconnect simulates a lost connection: every subscriber gets a
// connection-closed event with reason (libvirt's words: "eof", "keepalive",
// "error") and its stream closes. SetDown(true) as well makes redials fail.
func (h *Host) Disconnect(reason string) {
	h.Emit(virt.Event{Kind: virt.EventClosed, Reason: reason})
	h.evMu.Lock()
	defer h.evMu.Unlock()
	h.cluster.mu.Lock()
	subs := h.subs
	h.subs = nil
	h.cluster.mu.Unlock()
	for _, s := range subs {
		s.once.Do(func() { close(s.done) })
		if !s.closed {
			s.closed = true
			close(s.ch)
		}
	}
}

// SetDown sets Down under the cluster's lock, for tests that change it while
// other goroutines dial.
func (h *Host) SetDown(down bool) {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	h.Down = down
}

// Subscribers counts the open event streams.
func (h *Host) Subscribers() int {
	h.cluster.mu.Lock()
	defer h.cluster.mu.Unlock()
	return len(h.subs)
}

func (h *Host) DefineXML(string) (virt.Domain, error) {
	return nil, &virt.Error{Op: "define", Sentinel: virt.ErrNoSupport}
}

// Domain is a fake domain.
type Domain struct {
	host *Host
	info virt.DomainInfo
	// MigrateFn, when set, replaces the default instant successful move.
	MigrateFn func(ctx context.Context, d *Domain, p virt.MigrateParams) error
	// InfoFn, when set, answers Info: it gets the fake's current info, so a
	// hook can fail some calls and pass the others through.
	InfoFn func(virt.DomainInfo) (virt.DomainInfo, error)
	// XMLFn, when set, answers XML (a definition with disks for a cold
	// move, or a failure); nil gives a minimal definition.
	XMLFn     func(migratable bool) (string, error)
	Stats     virt.JobStats
	DirtyRate uint64 // bytes/s reported by MeasureDirtyRate
	Calls     []string
}

func (d *Domain) Info() (virt.DomainInfo, error) {
	d.host.cluster.mu.Lock()
	info := d.info
	d.host.cluster.mu.Unlock()
	if d.InfoFn != nil {
		return d.InfoFn(info)
	}
	return info, nil
}

// SetState changes the fake's state.
func (d *Domain) SetState(s virt.State, reason string) {
	d.host.cluster.mu.Lock()
	defer d.host.cluster.mu.Unlock()
	d.info.State, d.info.Reason = s, reason
}

func (d *Domain) XML(migratable bool) (string, error) {
	if d.XMLFn != nil {
		return d.XMLFn(migratable)
	}
	return fmt.Sprintf("<domain type='qemu'><name>%s</name><uuid>%s</uuid></domain>", d.info.Name, d.info.UUID), nil
}

func (d *Domain) Spec() (virt.DomainSpec, error) {
	return virt.DomainSpec{Name: d.info.Name, UUID: d.info.UUID, Type: "qemu", Arch: "x86_64", MemoryBytes: d.info.MemoryBytes, VCPUs: d.info.VCPUs}, nil
}

func (d *Domain) record(call string) {
	d.host.cluster.mu.Lock()
	d.Calls = append(d.Calls, call)
	d.host.cluster.mu.Unlock()
}

func (d *Domain) Migrate(ctx context.Context, p virt.MigrateParams) error {
	d.record("migrate")
	if d.MigrateFn != nil {
		return d.MigrateFn(ctx, d, p)
	}
	return d.MoveTo(p.DestURI)
}

// MoveTo completes a migration in the fake: the destination gets a running
// persistent copy, the source copy is shut off (still defined).
func (d *Domain) MoveTo(destURI string) error {
	c := d.host.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	dst, ok := c.Hosts[destURI]
	if !ok || dst.Down {
		return &virt.Error{Op: "migrate", Sentinel: virt.ErrUnreachable, Message: "destination unreachable"}
	}
	nd := &Domain{host: dst, info: d.info}
	nd.info.State, nd.info.Reason = virt.StateRunning, "migrated"
	dst.Domains[d.info.Name] = nd
	d.info.State, d.info.Reason = virt.StateShutoff, "migrated"
	d.Stats = virt.JobStats{Type: virt.JobCompleted, Downtime: 20 * time.Millisecond, DowntimeSet: true, DataProcessed: d.info.MemoryBytes, Iteration: 2}
	return nil
}

func (d *Domain) JobStats(completed bool) (virt.JobStats, error) {
	d.host.cluster.mu.Lock()
	defer d.host.cluster.mu.Unlock()
	if completed || d.Stats.Type != "" {
		return d.Stats, nil
	}
	return virt.JobStats{Type: virt.JobNone}, nil
}

func (d *Domain) AbortJob() error                    { d.record("abort"); return nil }
func (d *Domain) SetMaxDowntime(time.Duration) error { d.record("set-max-downtime"); return nil }
func (d *Domain) SetMaxSpeed(uint64) error           { d.record("set-max-speed"); return nil }
func (d *Domain) SetThrottle(int, int, int) error    { d.record("set-throttle"); return nil }
func (d *Domain) StartPostcopy() error               { d.record("postcopy"); return nil }

func (d *Domain) Suspend() error {
	d.record("suspend")
	d.SetState(virt.StatePaused, "user")
	return nil
}
func (d *Domain) Resume() error {
	d.record("resume")
	d.SetState(virt.StateRunning, "unpaused")
	return nil
}
func (d *Domain) Start() error {
	d.record("start")
	d.SetState(virt.StateRunning, "booted")
	return nil
}
func (d *Domain) Destroy() error {
	d.record("destroy")
	d.SetState(virt.StateShutoff, "destroyed")
	return nil
}

// MeasureDirtyRate returns the fake's DirtyRate.
func (d *Domain) MeasureDirtyRate(context.Context, time.Duration) (uint64, error) {
	return d.DirtyRate, nil
}

func (d *Domain) Undefine(bool) error {
	d.record("undefine")
	c := d.host.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.info.State.Active() {
		d.info.Persistent = false
		return nil
	}
	delete(d.host.Domains, d.info.Name)
	return nil
}
