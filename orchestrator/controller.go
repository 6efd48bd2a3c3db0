package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/precopy"
	"github.com/ferryvm/ferry/virt"
)

// Timing of the pre-copy monitor and of connections.
const (
	// sampleIntervalMS matches DESIGN.md §2: job stats every 250 ms.
	sampleIntervalMS = 250
	// journalIntervalMS bounds how often progress is written to the journal.
	journalIntervalMS = 1000
	// DefaultDialTimeout bounds connecting to a host during checks.
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxDowntime is QEMU's own default downtime limit.
	DefaultMaxDowntime = 300 * time.Millisecond
)

// DialFunc opens a connection to a host; virt.Dial in production.
type DialFunc func(ctx context.Context, uri string) (virt.Host, error)

// EventSink receives migration events for the SLA log (nil: none).
type EventSink interface {
	MigrationEvent(ctx context.Context, ev MigrationEvent) error
}

// MigrationEvent is what the orchestrator tells the SLA log.
type MigrationEvent struct {
	Kind        string // planned, switchover, completed, failed, rolled_back
	MigrationID string
	VM, VMUUID  string
	Source      string
	Dest        string
	At          time.Time
	Downtime    time.Duration
	Postcopy    bool
	Detail      string
}

// Controller runs migrations. Its fields are set by the caller; zero values
// of the optional ones are fine.
type Controller struct {
	Inventory   *Inventory
	Journal     *Journal
	Dial        DialFunc
	Log         *logrus.Entry
	Now         func() time.Time
	HooksDir    string
	HookTimeout time.Duration
	Events      EventSink
	DialTimeout time.Duration
	// Limits bound concurrent moves per host for every migration this
	// controller starts (a request's own non-zero limits win).
	Limits Limits
}

// Request is one live migration.
type Request struct {
	// ID names the migration; empty: a new UUID (ferry serve sets it to
	// answer before the move ends).
	ID             string
	VM             string
	From           string // inventory name or URI; empty: search the inventory
	To             string // inventory name or URI
	MaxDowntime    time.Duration
	BandwidthMiBps uint64
	Timeout        time.Duration // 0: none
	CopyStorage    bool
	DryRun         bool
	// PlanOnly runs the checks, measures the guest and returns the pre-copy
	// plan without moving anything.
	PlanOnly bool
	// Pre-copy control (see package precopy); zero values take its defaults.
	DowntimeCeiling   time.Duration
	AllowPostcopy     bool
	CompletionTimeout time.Duration
	OnTimeout         string // abort, postcopy or pause
	// PostcopyResumeWindow: how long a broken post-copy is resumed before it
	// is left to `ferry recover` (0: DefaultPostcopyResumeWindow).
	PostcopyResumeWindow time.Duration
	// Limits on concurrent moves per host (zero fields: the controller's).
	Limits Limits
	// WaitForSlot waits for a free slot when a limit is reached instead of
	// refusing with ErrLimit.
	WaitForSlot bool
	// Progress, when set, is called from the migration goroutine.
	Progress func(Progress)
}

// Progress is a snapshot reported during a migration.
type Progress struct {
	ID                   string        `json:"id"`
	VM                   string        `json:"vm"`
	Stage                Stage         `json:"-"`
	StageName            string        `json:"stage"`
	Message              string        `json:"message,omitempty"`
	Elapsed              time.Duration `json:"-"`
	ElapsedMS            int64         `json:"elapsed_ms"`
	Iteration            int           `json:"iteration"`
	Percent              float64       `json:"percent"`
	TotalBytes           uint64        `json:"total_bytes"`
	ProcessedBytes       uint64        `json:"processed_bytes"`
	RemainingBytes       uint64        `json:"remaining_bytes"`
	DirtyBytesPerSec     uint64        `json:"dirty_bytes_per_sec"`
	BandwidthBytesPerSec uint64        `json:"bandwidth_bytes_per_sec"`
	ExpectedDowntime     time.Duration `json:"-"`
	ExpectedDowntimeMS   int64         `json:"expected_downtime_ms"`
	DowntimeLimitMS      int64         `json:"downtime_limit_ms,omitempty"`
	ThrottlePct          int           `json:"throttle_pct,omitempty"`
	Strategy             string        `json:"strategy,omitempty"`
	Postcopy             bool          `json:"postcopy,omitempty"`
	// Policy is the reason of the pre-copy policy's latest action.
	Policy string `json:"policy,omitempty"`
}

// Check is one pre-flight check and its result.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Result summarises a migration.
type Result struct {
	ID          string        `json:"id"`
	VM          string        `json:"vm"`
	VMUUID      string        `json:"vm_uuid,omitempty"`
	Source      string        `json:"source"`
	Dest        string        `json:"destination"`
	State       string        `json:"state"`
	DryRun      bool          `json:"dry_run,omitempty"`
	Checks      []Check       `json:"checks,omitempty"`
	Started     time.Time     `json:"started_at"`
	Finished    time.Time     `json:"finished_at"`
	Total       time.Duration `json:"-"`
	TotalMS     int64         `json:"total_ms"`
	MigrationMS int64         `json:"migration_ms"`
	Downtime    time.Duration `json:"-"`
	DowntimeMS  int64         `json:"downtime_ms"`
	MemoryBytes uint64        `json:"memory_bytes"`
	DataSent    uint64        `json:"data_sent_bytes"`
	Iterations  int           `json:"iterations"`
	HookErrors  []string      `json:"hook_errors,omitempty"`
	Error       string        `json:"error,omitempty"`
	Plan        *PlanInfo     `json:"plan,omitempty"`
	Strategy    string        `json:"strategy,omitempty"`
	Postcopy    bool          `json:"postcopy,omitempty"`
	// PolicyActions are the pre-copy policy's decisions, in order.
	PolicyActions []precopy.Action `json:"policy_actions,omitempty"`
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Controller) log() *logrus.Entry {
	if c.Log != nil {
		return c.Log
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

func (c *Controller) dial(ctx context.Context, h HostEntry) (virt.Host, error) {
	t := c.DialTimeout
	if t == 0 {
		t = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		dial = virt.Dial
	}
	conn, err := dial(dctx, h.URI)
	if err != nil {
		if errors.Is(err, virt.ErrBadURI) {
			return nil, refuse(ErrInvalidRequest, err, "host %s: %v", h.Name, err)
		}
		return nil, refuse(ErrUnreachable, err, "host %s (%s) is unreachable: %v", h.Name, h.URI, err)
	}
	return conn, nil
}

// migration is the state of one Migrate call.
type migration struct {
	c                *Controller
	req              Request
	rec              *Record
	log              *logrus.Entry
	res              *Result
	src, dst         HostEntry
	srcConn, dstConn virt.Host
	dom              virt.Domain
	info             virt.DomainInfo
	spec             virt.DomainSpec
	journaled        bool
	watch            *watch // the running job's follower, from stage 2 on
}

// Migrate runs one live migration through the six stages. On refusal nothing
// was changed (the error wraps ErrRefused); on failure the VM runs on the
// source (ErrRolledBack) or the journal row is left for `ferry recover`
// (ErrNeedsRecovery).
func (c *Controller) Migrate(ctx context.Context, req Request) (*Result, error) {
	if req.MaxDowntime == 0 {
		req.MaxDowntime = DefaultMaxDowntime
	}
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	if req.PlanOnly {
		req.DryRun = true
	}
	m := &migration{c: c, req: req,
		res: &Result{ID: id, VM: req.VM, Started: c.now(), DryRun: req.DryRun},
		rec: &Record{ID: id, Kind: "live", VM: req.VM, State: StateRunning, Owner: ownerToken()},
	}
	m.log = c.log().WithFields(logrus.Fields{"migration": id, "vm": req.VM})
	defer func() {
		for _, h := range []virt.Host{m.srcConn, m.dstConn} {
			if h != nil {
				h.Close()
			}
		}
	}()
	opts, _ := json.Marshal(map[string]any{
		"max_downtime_ms": req.MaxDowntime.Milliseconds(), "bandwidth_mibps": req.BandwidthMiBps,
		"timeout_ms": req.Timeout.Milliseconds(), "copy_storage": req.CopyStorage,
		"max_downtime_ceiling_ms": req.DowntimeCeiling.Milliseconds(), "allow_postcopy": req.AllowPostcopy,
		"completion_timeout_ms": req.CompletionTimeout.Milliseconds(), "on_timeout": req.OnTimeout,
	})
	m.rec.Options = string(opts)
	if !req.DryRun {
		if err := c.Journal.Create(ctx, m.rec); err != nil {
			return m.res, err
		}
		m.journaled = true
	}
	err := m.preflight(ctx)
	if err != nil {
		return m.refused(ctx, err)
	}
	plan, err := m.plan(ctx)
	if err != nil {
		return m.refused(ctx, err)
	}
	m.res.Plan, m.res.Strategy = plan, string(plan.Strategy)
	if req.DryRun {
		m.res.State = "dry_run"
		m.res.Finished = c.now()
		return m.res, nil
	}
	return m.run(ctx, plan)
}

func (m *migration) check(name string, err error, okDetail string) error {
	if err != nil {
		m.res.Checks = append(m.res.Checks, Check{Name: name, Detail: err.Error()})
		return err
	}
	m.res.Checks = append(m.res.Checks, Check{Name: name, OK: true, Detail: okDetail})
	return nil
}

func (m *migration) progress(p Progress) {
	if m.req.Progress == nil {
		return
	}
	p.ID, p.VM, p.StageName = m.rec.ID, m.req.VM, p.Stage.String()
	p.ElapsedMS = p.Elapsed.Milliseconds()
	p.ExpectedDowntimeMS = p.ExpectedDowntime.Milliseconds()
	m.req.Progress(p)
}

// refused records a refusal in the journal; nothing was changed on any host.
func (m *migration) refused(ctx context.Context, err error) (*Result, error) {
	if !errors.Is(err, ErrRefused) {
		err = refuse(ErrInvalidRequest, err, "%v", err)
	}
	m.res.State, m.res.Error, m.res.Finished = StateRefused, err.Error(), m.c.now()
	m.log.WithError(err).Info("migration refused")
	if m.journaled {
		// A refusal after the reservation (say, while planning) frees it.
		if jerr := m.c.Journal.Release(context.WithoutCancel(ctx), m.rec.ID); jerr != nil {
			m.log.WithError(jerr).Error("journal")
		}
		cols := map[string]any{"vm_uuid": m.info.UUID, "src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI}
		if jerr := m.c.Journal.Finish(context.WithoutCancel(ctx), m.rec.ID, StateRefused, err.Error(), cols); jerr != nil {
			m.log.WithError(jerr).Error("journal")
		}
	}
	return m.res, err
}

// preflight runs stages 0 and 1: find the VM, check the destination, reserve.
func (m *migration) preflight(ctx context.Context) error {
	c, req := m.c, m.req
	if !ValidName(req.VM) {
		if _, err := uuid.Parse(req.VM); err != nil {
			return refuse(ErrInvalidRequest, nil, "VM %q is not a valid name (letters, digits, '.', '_', '-') nor a UUID", req.VM)
		}
	}
	if req.To == "" {
		return refuse(ErrInvalidRequest, nil, "no destination: give --to HOST (an inventory name or a libvirt URI)")
	}
	if req.Timeout < 0 || req.MaxDowntime < 0 {
		return refuse(ErrInvalidRequest, nil, "durations must be positive")
	}
	if err := req.checkRanges(); err != nil {
		return err
	}
	var err error
	if m.dst, err = c.Inventory.Resolve(req.To); err != nil {
		return err
	}
	if req.From != "" {
		if m.src, err = c.Inventory.Resolve(req.From); err != nil {
			return err
		}
		if m.src.URI == m.dst.URI {
			return refuse(ErrSameHost, nil, "source and destination are both %s: nothing to migrate", m.src.Name)
		}
	}
	m.res.Dest = m.dst.Name

	// Stage 0: pre-migration. Find the VM and check it runs.
	if err := m.findSource(ctx); err != nil {
		return err
	}
	m.res.Source, m.res.VMUUID = m.src.Name, m.info.UUID
	m.log = m.log.WithFields(logrus.Fields{"src": m.src.Name, "dst": m.dst.Name})
	if m.src.URI == m.dst.URI {
		return refuse(ErrSameHost, nil, "VM %s already runs on %s, the requested destination", req.VM, m.dst.Name)
	}
	if m.info.State != virt.StateRunning {
		return m.check("vm-running", refuse(ErrNotRunning, nil, "VM %s is %s on %s: live migration needs a running VM (start it, or move it with --cold)", m.info.Name, m.info.State, m.src.Name), "")
	}
	if !req.DryRun {
		// One VM, one move: the check and the claim are one transaction.
		// Before the job check, so that the loser of a race names the winner.
		if _, err := c.Journal.Claim(ctx, m.rec.ID, m.info.UUID, map[string]any{"vm_name": m.info.Name,
			"src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI}, nil); err != nil {
			return err
		}
	}
	if js, err := m.dom.JobStats(false); err == nil && js.Type != virt.JobNone && js.Type != "" {
		return refuse(ErrBusy, nil, "VM %s has a job in progress on %s (another migration?); wait for it or abort it with virsh domjobabort", m.info.Name, m.src.Name)
	}
	_ = m.check("vm-running", nil, fmt.Sprintf("%s is running on %s", m.info.Name, m.src.Name))
	if m.spec, err = m.dom.Spec(); err != nil {
		return err
	}
	xml, err := m.dom.XML(false)
	if err != nil {
		return err
	}
	m.rec.VMXML = xml
	if m.journaled {
		if err := c.Journal.Update(ctx, m.rec.ID, map[string]any{"vm_name": m.info.Name, "vm_uuid": m.info.UUID,
			"src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI,
			"memory_bytes": int64(m.info.MemoryBytes), "vm_xml": xml}); err != nil {
			return err
		}
	}
	m.progress(Progress{Stage: StagePreMigration, Message: fmt.Sprintf("%s found running on %s", m.info.Name, m.src.Name)})
	if err := m.preMigrationHooks(ctx); err != nil {
		return err
	}

	// Stage 1: reservation.
	return m.reserve(ctx)
}

// findSource locates the VM: on --from, or by asking every inventory host.
func (m *migration) findSource(ctx context.Context) error {
	if m.src.URI != "" {
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
		m.info, err = dom.Info()
		return err
	}
	if len(m.c.Inventory.Hosts) == 0 {
		return refuse(ErrInvalidRequest, nil, "no inventory to search for VM %q: give --from HOST (a libvirt URI) or an inventory file (--config)", m.req.VM)
	}
	type found struct {
		h    HostEntry
		conn virt.Host
		dom  virt.Domain
		info virt.DomainInfo
		err  error
	}
	results := make([]found, len(m.c.Inventory.Hosts))
	var wg sync.WaitGroup
	for i, h := range m.c.Inventory.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := found{h: h}
			r.conn, r.err = m.c.dial(ctx, h)
			if r.err == nil {
				r.dom, r.err = r.conn.LookupDomain(m.req.VM)
				if r.err == nil {
					r.info, r.err = r.dom.Info()
				}
			}
			results[i] = r
		}()
	}
	wg.Wait()
	var hits []found
	var unreachable []string
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
	// Several definitions (a stale shut-off copy): the active one is the source.
	var pick *found
	for i := range hits {
		if hits[i].info.State.Active() {
			if pick != nil {
				for _, h := range hits {
					h.conn.Close()
				}
				if open, _ := m.c.Journal.OpenForVM(ctx, hits[i].info.UUID); open != nil {
					return refuse(ErrBusy, nil, "VM %s is being migrated from %s to %s by migration %s (started %s); wait for it, or run `ferry recover` if its ferry process is gone",
						m.req.VM, open.Source, open.Dest, open.ID[:8], open.StartedAt.Local().Format("15:04:05"))
				}
				return refuse(ErrBusy, nil, "VM %s is active on both %s and %s; resolve that first (ferry recover, or virsh)", m.req.VM, pick.h.Name, hits[i].h.Name)
			}
			pick = &hits[i]
		}
	}
	if pick == nil && len(hits) > 0 {
		pick = &hits[0]
	}
	for i := range hits {
		if pick != &hits[i] {
			hits[i].conn.Close()
		}
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

// reserve runs stage 1: connect to the destination, check it can take the
// VM, and record a reservation of its memory.
func (m *migration) reserve(ctx context.Context) error {
	c := m.c
	conn, err := c.dial(ctx, m.dst)
	if err := m.check("destination-reachable", err, m.dst.URI); err != nil {
		return err
	}
	m.dstConn = conn
	srcID, err := m.srcConn.Identity()
	if err != nil {
		return refuse(ErrUnreachable, err, "source %s: %v", m.src.Name, err)
	}
	dstID, err := conn.Identity()
	if err != nil {
		return refuse(ErrUnreachable, err, "destination %s: %v", m.dst.Name, err)
	}
	if srcID.UUID != "" && srcID.UUID == dstID.UUID {
		return m.check("distinct-hosts", refuse(ErrSameHost, nil, "%s and %s are the same libvirt host (host UUID %s): nothing to migrate", m.src.Name, m.dst.Name, dstID.UUID), "")
	}
	_ = m.check("distinct-hosts", nil, "host UUIDs differ")
	if di, err := findClash(conn, m.info); err != nil {
		return refuse(ErrUnreachable, err, "destination %s: %v", m.dst.Name, err)
	} else if di != nil {
		return m.check("no-name-clash", refuse(ErrNameClash, nil, "destination %s already has a domain %q (UUID %s, %s); undefine it there or rename the VM", m.dst.Name, di.Name, di.UUID, di.State), "")
	}
	_ = m.check("no-name-clash", nil, "no domain with that name or UUID")
	capa, err := conn.Capacity()
	if err != nil {
		return refuse(ErrUnreachable, err, "destination %s: %v", m.dst.Name, err)
	}
	if m.info.VCPUs > capa.CPUs {
		return m.check("vcpus", refuse(ErrInsufficientMemory, nil, "VM %s has %d vCPUs, destination %s only %d CPUs", m.info.Name, m.info.VCPUs, m.dst.Name, capa.CPUs), "")
	}
	if err := conn.CompareCPU(m.spec); err != nil {
		if errors.Is(err, virt.ErrNoSupport) {
			_ = m.check("cpu-compatible", nil, "not checked: "+err.Error())
		} else {
			return m.check("cpu-compatible", refuse(ErrCPUIncompatible, err, "destination %s cannot run VM %s's CPU: %v", m.dst.Name, m.info.Name, err), "")
		}
	} else {
		_ = m.check("cpu-compatible", nil, "guest CPU runs on the destination")
	}
	if !m.req.DryRun {
		if err := m.acquireSlot(ctx, srcID.UUID, dstID.UUID, m.req.Limits, m.req.WaitForSlot); err != nil {
			return m.check("limits", err, "")
		}
	}
	var avail uint64
	if capa.FreeMemoryBytes > m.dst.ReservedBytes() {
		avail = capa.FreeMemoryBytes - m.dst.ReservedBytes()
	}
	need := m.info.MemoryBytes
	if m.req.DryRun {
		held, err := c.Journal.Reserved(ctx, dstID.UUID)
		if err != nil {
			return err
		}
		if held+need > avail {
			return m.check("memory", refuse(ErrInsufficientMemory, nil, "not enough free memory on %s: the VM needs %s, %s is available after the host reserve and %s held by migrations in flight",
				m.dst.Name, mib(need), mib(sub(avail, held)), mib(held)), "")
		}
	} else if err := c.Journal.Reserve(ctx, m.rec.ID, dstID.UUID, m.dst.Name, need, avail); err != nil {
		return m.check("memory", err, "")
	}
	_ = m.check("memory", nil, fmt.Sprintf("needs %s of %s available", mib(need), mib(avail)))
	if len(m.spec.Disks) > 0 && !m.req.CopyStorage {
		_ = m.check("storage", nil, fmt.Sprintf("%d disk(s) assumed on shared storage (use --copy-storage for host-local disks)", len(m.spec.Disks)))
	}
	if !m.req.DryRun {
		if err := c.Journal.EnterStage(ctx, m.rec.ID, StageReservation, c.now(), nil); err != nil {
			return err
		}
	}
	m.progress(Progress{Stage: StageReservation, Message: fmt.Sprintf("%s reserved on %s", mib(need), m.dst.Name)})
	return nil
}

// slotPoll is how often a migration waiting for a move slot asks again.
const slotPoll = 500 * time.Millisecond

// acquireSlot takes the move slot src→dst within the limits (merged with
// the controller's), waiting for one when wait is set.
func (m *migration) acquireSlot(ctx context.Context, srcKey, dstKey string, lim Limits, wait bool) error {
	if lim.MaxIncoming == 0 {
		lim.MaxIncoming = m.c.Limits.MaxIncoming
	}
	if lim.MaxOutgoing == 0 {
		lim.MaxOutgoing = m.c.Limits.MaxOutgoing
	}
	src, dst := SlotHost{Key: srcKey, Name: m.src.Name}, SlotHost{Key: dstKey, Name: m.dst.Name}
	for {
		err := m.c.Journal.AcquireSlot(ctx, m.rec.ID, src, dst, lim)
		if err == nil || !wait || !errors.Is(err, ErrLimit) {
			return err
		}
		m.progress(Progress{Stage: StageReservation, Message: "waiting for a move slot: " + err.Error()})
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for a move slot: %w", err)
		case <-time.After(slotPoll):
		}
	}
}

func sub(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// Refuse journals a request rejected before it reached Migrate (a malformed
// flag, say), so every refusal leaves a row with its reason.
func (c *Controller) Refuse(ctx context.Context, req Request, reason error) error {
	err := refuse(ErrInvalidRequest, reason, "%v", reason)
	rec := &Record{ID: uuid.NewString(), Kind: "live", VM: req.VM, Dest: req.To, Source: req.From, State: StateRunning, Owner: ownerToken()}
	if jerr := c.Journal.Create(ctx, rec); jerr != nil {
		return errors.Join(err, jerr)
	}
	if jerr := c.Journal.Finish(ctx, rec.ID, StateRefused, err.Error(), nil); jerr != nil {
		return errors.Join(err, jerr)
	}
	return err
}

// findClash returns the domain on h that has the VM's name or UUID, if any.
func findClash(h virt.Host, vm virt.DomainInfo) (*virt.DomainInfo, error) {
	for _, key := range []string{vm.Name, vm.UUID} {
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
