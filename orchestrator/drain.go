package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/virt"
)

// Drain errors.
var (
	// ErrDrainIncomplete: the drain ended with VMs still on the host.
	ErrDrainIncomplete = errors.New("host not empty after drain")
	// ErrDrainCancelled: the drain was cancelled before it emptied the host.
	ErrDrainCancelled = errors.New("drain cancelled")
	// ErrUnknownDrain: no drain with that id.
	ErrUnknownDrain = errors.New("unknown drain")
)

// drainTick is how often a drain looks for work it can start, a cancel
// request from another process, and slots freed by other processes.
const drainTick = 500 * time.Millisecond

// maxRequeues bounds how often a VM goes back to the queue because a race
// took its slot or memory (not counted as attempts).
const maxRequeues = 10

// Drain marks req.Host in maintenance and moves every VM off it (live for
// running ones, cold for stopped ones unless RunningOnly) within the limits.
// Cancelling ctx stops new moves; moves in flight finish unless req.Abort is
// done, which rolls them back. The report is persisted as it changes.
// The error wraps ErrRefused for bad requests, ErrDrainCancelled or
// ErrDrainIncomplete when the host is not empty at the end.
func (c *Controller) Drain(ctx context.Context, req DrainRequest) (*DrainReport, error) {
	req = drainDefaults(req)
	if err := validateDrain(req); err != nil {
		return nil, err
	}
	if c.Journal == nil {
		return nil, errors.New("drain: the controller has no journal")
	}
	if len(c.Inventory.Hosts) < 2 {
		return nil, refuse(ErrInvalidRequest, nil, "drain needs an inventory with at least two hosts (--config): the host to drain and somewhere to put its VMs")
	}
	src, err := c.Inventory.Resolve(req.Host)
	if err != nil {
		return nil, err
	}
	targets, err := c.drainTargets(src, req.Targets)
	if err != nil {
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	d := &drainRun{c: c, req: req, src: src, targets: targets, conns: map[string]virt.Host{},
		done: make(chan moveOutcome, req.Parallel), inflightTo: map[string]int{}, keys: map[string]string{},
		log: c.log().WithFields(logrus.Fields{"drain": id, "host": src.Name})}
	d.rep = &DrainReport{ID: id, Host: src.Name, State: DrainRunning, DryRun: req.DryRun, Parallel: req.Parallel,
		MaxPerTarget: req.MaxPerTarget, StartedAt: c.now(), Owner: ownerToken(), VMs: []DrainVM{}}
	defer d.closeConns()

	if d.srcConn, err = c.dial(ctx, src); err != nil {
		return nil, err
	}
	if d.srcID, err = d.srcConn.Identity(); err != nil {
		return nil, refuse(ErrUnreachable, err, "host %s: %v", src.Name, err)
	}
	if !req.DryRun {
		if err := c.Journal.beginDrain(ctx, d.rep); err != nil {
			return nil, err
		}
		d.persisted = true
		maint, err := OpenMaintenance(ctx, c.Journal.db)
		if err != nil {
			return d.end(ctx, err)
		}
		reason := "drain " + short(id)
		if req.Reason != "" {
			reason += ": " + req.Reason
		}
		if err := maint.Set(ctx, src.Name, reason); err != nil {
			return d.end(ctx, err)
		}
		d.recoverInterrupted(ctx)
	}
	if err := d.listVMs(); err != nil {
		return d.end(ctx, err)
	}
	d.log.WithField("vms", len(d.rep.VMs)).Info("drain planned")
	if req.DryRun {
		return d.dryRun(ctx)
	}
	d.changed(ctx, true)
	d.loop(ctx)
	return d.end(ctx, nil)
}

func drainDefaults(req DrainRequest) DrainRequest {
	if req.Parallel == 0 {
		req.Parallel = DefaultDrainParallel
	}
	if req.MaxPerTarget == 0 {
		req.MaxPerTarget = DefaultDrainMaxPerTarget
	}
	if req.Order == "" {
		req.Order = "smallest"
	}
	if req.Retries < 0 {
		req.Retries = 0
	}
	if req.Backoff == 0 {
		req.Backoff = DefaultDrainBackoff
	}
	return req
}

// validateDrain checks a request's own fields; nothing is touched.
func validateDrain(req DrainRequest) error {
	switch {
	case req.Host == "":
		return refuse(ErrInvalidRequest, nil, "no host to drain: give its inventory name")
	case !ValidName(req.Host):
		return refuse(ErrInvalidRequest, nil, "host %q is not a valid inventory name (letters, digits, '.', '_', '-')", req.Host)
	case req.Parallel < 1:
		return refuse(ErrInvalidRequest, nil, "--parallel %d: must be at least 1", req.Parallel)
	case req.MaxPerTarget < 1:
		return refuse(ErrInvalidRequest, nil, "--max-per-target %d: must be at least 1", req.MaxPerTarget)
	case req.Backoff < 0:
		return refuse(ErrInvalidRequest, nil, "--backoff must be positive")
	}
	if _, ok := vmOrders[req.Order]; !ok {
		return refuse(ErrInvalidRequest, nil, "--order %q: use smallest, largest or name", req.Order)
	}
	// Before anything is sized from them (the done channel holds Parallel).
	return req.checkRanges()
}

// drainTargets resolves the hosts VMs may go to: the given ones, or every
// other inventory host.
func (c *Controller) drainTargets(src HostEntry, names []string) ([]HostEntry, error) {
	var out []HostEntry
	if len(names) == 0 {
		for _, h := range c.Inventory.Hosts {
			if h.URI != src.URI {
				out = append(out, h)
			}
		}
		return out, nil
	}
	for _, n := range names {
		h, err := c.Inventory.Resolve(n)
		if err != nil {
			return nil, err
		}
		if h.URI == src.URI {
			return nil, refuse(ErrSameHost, nil, "--to %s is the host being drained", n)
		}
		out = append(out, h)
	}
	return out, nil
}

// vmOrders sort a drain's VMs; ties are broken by name.
var vmOrders = map[string]func(a, b DrainVM) bool{
	"smallest": func(a, b DrainVM) bool { return a.MemoryBytes < b.MemoryBytes },
	"largest":  func(a, b DrainVM) bool { return a.MemoryBytes > b.MemoryBytes },
	"name":     func(a, b DrainVM) bool { return false },
}

// orderVMs sorts VMs in place for the given order.
func orderVMs(vms []DrainVM, order string) {
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

// drainKind says how a VM in a given state leaves the host, or why it stays.
func drainKind(st virt.State, runningOnly bool) (kind, skip string) {
	switch st {
	case virt.StateRunning:
		return "live", ""
	case virt.StateShutoff:
		if runningOnly {
			return "cold", "stopped, and --running-only leaves stopped VMs"
		}
		return "cold", ""
	case virt.StatePaused:
		return "live", "paused: resume it (or shut it down) and drain again"
	}
	return "", fmt.Sprintf("%s: neither running nor shut off; move it by hand", st)
}

// backoffFor is the wait before attempt n+1 after n failed attempts.
func backoffFor(base time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	return d
}

// outcome classes of one move.
const (
	outMoved   = iota
	outRetry   // failed; try again after a backoff if attempts are left
	outRequeue // lost a race for a slot or memory: try again, not an attempt
	outFail    // will not succeed by retrying (refused, or needs recover)
)

// classify turns a move's error into what the drain does next.
func classify(err error) int {
	switch {
	case err == nil:
		return outMoved
	case errors.Is(err, ErrLimit), errors.Is(err, ErrInsufficientMemory), errors.Is(err, ErrInsufficientStorage):
		return outRequeue
	case errors.Is(err, ErrNeedsRecovery):
		return outFail
	case errors.Is(err, ErrBusy), errors.Is(err, ErrUnreachable):
		return outRetry
	case errors.Is(err, ErrRefused):
		return outFail
	}
	return outRetry // rolled back or an unexpected error: the VM runs on the source
}

type moveOutcome struct {
	idx      int
	err      error
	downtime time.Duration
	sent     uint64
}

// drainRun is the state of one Drain call.
type drainRun struct {
	c         *Controller
	req       DrainRequest
	src       HostEntry
	srcConn   virt.Host
	srcID     virt.Identity
	targets   []HostEntry
	conns     map[string]virt.Host // target connections, dialled once
	log       *logrus.Entry
	persisted bool
	cancelled bool
	running   int
	done      chan moveOutcome

	mu         sync.Mutex // guards rep and the per-VM fields below
	rep        *DrainReport
	nextTry    []time.Time
	requeues   []int
	inflightTo map[string]int
	keys       map[string]string // target name -> host UUID as placement saw it; loop goroutine only
	lastSave   time.Time
}

func (d *drainRun) closeConns() {
	if d.srcConn != nil {
		d.srcConn.Close()
	}
	for _, c := range d.conns {
		c.Close()
	}
}

// recoverInterrupted finishes moves of this host left by dead ferry
// processes (an interrupted earlier drain), so a re-run starts clean.
func (d *drainRun) recoverInterrupted(ctx context.Context) {
	for _, st := range []string{StateRunning, StateFailed} {
		rows, err := d.c.Journal.List(ctx, ListFilter{State: st})
		if err != nil {
			d.log.WithError(err).Warn("listing unfinished migrations")
			return
		}
		for _, r := range rows {
			if (r.Source != d.src.Name && r.Dest != d.src.Name) || (r.State == StateRunning && d.c.Journal.OwnerAlive(ctx, r.Owner)) {
				continue
			}
			res, err := d.c.Recover(ctx, RecoverOptions{ID: r.ID})
			note := fmt.Sprintf("%s (%s): recovered", r.VM, short(r.ID))
			if err != nil {
				note = fmt.Sprintf("%s (%s): recover failed: %v", r.VM, short(r.ID), err)
			} else if len(res) == 1 && res[0].RunsOn != "" {
				note = fmt.Sprintf("%s (%s): recovered, runs on %s", r.VM, short(r.ID), res[0].RunsOn)
			}
			d.rep.Recovered = append(d.rep.Recovered, note)
			d.log.Info(note)
		}
	}
}

// listVMs reads the host's domains into the report, ordered.
func (d *drainRun) listVMs() error {
	doms, err := d.srcConn.ListDomains()
	if err != nil {
		return fmt.Errorf("listing VMs on %s: %w", d.src.Name, err)
	}
	for _, di := range doms {
		kind, skip := drainKind(di.State, d.req.RunningOnly)
		v := DrainVM{VM: di.Name, UUID: di.UUID, Kind: kind, MemoryBytes: di.MemoryBytes, State: DrainVMPending}
		if skip != "" {
			v.State, v.Reason = DrainVMSkipped, skip
		}
		d.rep.VMs = append(d.rep.VMs, v)
	}
	orderVMs(d.rep.VMs, d.req.Order)
	d.nextTry = make([]time.Time, len(d.rep.VMs))
	d.requeues = make([]int, len(d.rep.VMs))
	d.tally()
	return nil
}

// target returns a live connection to a target host.
func (d *drainRun) target(ctx context.Context, h HostEntry) (virt.Host, error) {
	if conn, ok := d.conns[h.Name]; ok {
		if _, err := conn.Identity(); err == nil {
			return conn, nil
		}
		conn.Close()
		delete(d.conns, h.Name)
	}
	conn, err := d.c.dial(ctx, h)
	if err != nil {
		return nil, err
	}
	d.conns[h.Name] = conn
	return conn, nil
}

// place chooses a destination for VM i among the targets, counting moves
// in flight (this drain's and other processes') and, for a dry run, the
// memory planned for earlier VMs.
func (d *drainRun) place(ctx context.Context, i int, planned map[string]uint64) (Placement, error) {
	v := d.rep.VMs[i]
	dom, err := d.srcConn.LookupDomain(v.UUID)
	if err != nil {
		return Placement{}, fmt.Errorf("VM %s on %s: %w", v.VM, d.src.Name, err)
	}
	info, err := dom.Info()
	if err != nil {
		return Placement{}, err
	}
	spec, err := dom.Spec()
	if err != nil {
		return Placement{}, err
	}
	maint, err := OpenMaintenance(ctx, d.c.Journal.db)
	if err != nil {
		return Placement{}, err
	}
	marks, err := maint.List(ctx)
	if err != nil {
		return Placement{}, err
	}
	inMaint := map[string]string{}
	for _, mk := range marks {
		inMaint[mk.Host] = mk.Reason
	}
	cands := []Candidate{{Name: d.src.Name, IsSource: true, Reachable: true}}
	for _, h := range d.targets {
		conn, err := d.target(ctx, h)
		cand := d.c.candidate(ctx, h, conn, err, spec, d.src, d.srcID)
		if cand.Reachable && !cand.IsSource {
			if di, lerr := findClash(conn, info); lerr != nil {
				cand.Reachable, cand.Error = false, lerr.Error()
			} else if di != nil {
				cand.Clash = fmt.Sprintf("a domain %q (UUID %s, %s) is already defined there", di.Name, di.UUID, di.State)
			}
			if id, err := conn.Identity(); err == nil {
				d.keys[h.Name] = id.UUID
				in, _, err := d.c.Journal.InFlight(ctx, id.UUID)
				if err != nil {
					return Placement{}, err
				}
				cand.Incoming = max(in, d.inflightTo[h.Name])
			}
		}
		if reason, ok := inMaint[h.Name]; ok {
			cand.InMaintenance, cand.MaintenanceNote = true, reason
		}
		if planned == nil {
			cand.MaxIncoming = d.req.MaxPerTarget
		} else {
			cand.ReservedBytes += planned[h.Name]
		}
		cands = append(cands, cand)
	}
	p := Place(VMNeeds{Name: info.Name, MemoryBytes: info.MemoryBytes, VCPUs: info.VCPUs}, cands, d.req.Place)
	p.Source = d.src.Name
	return p, nil
}

// dryRun places every VM in order as if the earlier ones had moved.
func (d *drainRun) dryRun(ctx context.Context) (*DrainReport, error) {
	planned := map[string]uint64{}
	for i := range d.rep.VMs {
		v := &d.rep.VMs[i]
		if v.State != DrainVMPending {
			continue
		}
		p, err := d.place(ctx, i, planned)
		switch {
		case err != nil:
			v.State, v.Error = DrainVMFailed, err.Error()
		case p.Host == "":
			v.State, v.Error = DrainVMFailed, p.Reason
		default:
			v.Dest, v.Reason = p.Host, p.Reason
			planned[p.Host] += v.MemoryBytes
		}
	}
	d.rep.State, d.rep.FinishedAt = DrainPlanned, d.c.now()
	d.tally()
	var failed []string
	for _, v := range d.rep.VMs {
		if v.State == DrainVMFailed || v.State == DrainVMSkipped {
			failed = append(failed, v.VM+": "+firstNonEmpty(v.Error, v.Reason))
		}
	}
	if len(failed) > 0 {
		return d.rep, fmt.Errorf("%w: the plan leaves %d VM(s) on %s: %s", ErrDrainIncomplete, len(failed), d.src.Name, strings.Join(failed, "; "))
	}
	return d.rep, nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// loop starts moves while the limits allow, until every VM is settled or
// the drain is cancelled and the moves in flight have ended.
func (d *drainRun) loop(ctx context.Context) {
	moveCtx := d.req.Abort
	if moveCtx == nil {
		moveCtx = context.WithoutCancel(ctx)
	}
	bg := context.WithoutCancel(ctx)
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	ctxDone := ctx.Done()
	for {
		if !d.cancelled {
			if ctx.Err() != nil {
				d.cancel("interrupted")
			} else if c, err := d.c.Journal.drainCancelRequested(bg, d.rep.ID); err == nil && c {
				d.cancel("cancel requested")
			}
		}
		if !d.cancelled {
			d.schedule(bg, moveCtx)
		}
		if d.running == 0 && (d.cancelled || !d.work()) {
			return
		}
		select {
		case o := <-d.done:
			d.running--
			d.finish(bg, o)
		case <-tick.C:
		case <-ctxDone:
			ctxDone = nil
		}
	}
}

// work reports whether any VM still waits for a move.
func (d *drainRun) work() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.rep.VMs {
		if v.State == DrainVMPending || v.State == DrainVMWaiting {
			return true
		}
	}
	return false
}

// cancel stops new moves; VMs not started are marked so.
func (d *drainRun) cancel(why string) {
	d.cancelled = true
	d.log.WithField("reason", why).Info("drain cancelled: no new moves; moves in flight finish")
	d.mu.Lock()
	for i := range d.rep.VMs {
		v := &d.rep.VMs[i]
		if v.State == DrainVMPending || v.State == DrainVMWaiting {
			v.State, v.Reason = DrainVMNotStarted, "drain "+why+" before its turn"
		}
	}
	d.rep.Cancel = true
	d.mu.Unlock()
	d.changed(context.Background(), true)
}

// anyTargetFree reports whether some target may take a move now; when
// none can, placing every waiting VM (several calls per host each) would
// only learn that again, every tick.
func (d *drainRun) anyTargetFree(ctx context.Context) bool {
	for _, h := range d.targets {
		key, ok := d.keys[h.Name]
		if !ok {
			return true // not seen yet
		}
		in, _, err := d.c.Journal.InFlight(ctx, key)
		if err != nil || max(in, d.inflightTo[h.Name]) < d.req.MaxPerTarget {
			return true
		}
	}
	return false
}

// schedule starts moves in order while the drain has room.
func (d *drainRun) schedule(ctx, moveCtx context.Context) {
	if d.running >= d.req.Parallel || !d.anyTargetFree(ctx) {
		return
	}
	now := d.c.now()
	for i := range d.rep.VMs {
		if d.running >= d.req.Parallel {
			return
		}
		d.mu.Lock()
		v := d.rep.VMs[i]
		ready := (v.State == DrainVMPending || v.State == DrainVMWaiting) && !now.Before(d.nextTry[i])
		d.mu.Unlock()
		if !ready {
			continue
		}
		p, err := d.place(ctx, i, nil)
		d.mu.Lock()
		vm := &d.rep.VMs[i]
		switch {
		case errors.Is(err, virt.ErrNotFound):
			// Moved or undefined by someone else meanwhile: nothing to do.
			vm.State, vm.Reason, vm.FinishedAt = DrainVMSkipped, "no longer on "+d.src.Name+" (moved or undefined meanwhile)", now
		case err != nil:
			// The source stopped answering, say: try again later, not forever.
			d.requeues[i]++
			if d.requeues[i] > maxRequeues {
				vm.State, vm.Error, vm.FinishedAt = DrainVMFailed, "placement: "+err.Error(), now
				break
			}
			vm.State, vm.Reason = DrainVMWaiting, "placement: "+err.Error()
			d.nextTry[i] = now.Add(d.req.Backoff)
		case p.Host == "" && p.OnlyBusy():
			vm.State, vm.Reason = DrainVMWaiting, "waiting for a free destination: "+p.Reason
		case p.Host == "":
			vm.State, vm.Error, vm.FinishedAt = DrainVMFailed, p.Reason, now
			d.log.WithField("vm", vm.VM).Warn(p.Reason)
		default:
			d.start(moveCtx, i, p)
		}
		d.mu.Unlock()
		d.changed(ctx, true)
	}
}

// start launches VM i's move to the placement's host; d.mu is held.
func (d *drainRun) start(moveCtx context.Context, i int, p Placement) {
	v := &d.rep.VMs[i]
	id := uuid.NewString()
	v.State, v.Dest, v.Reason, v.Error = DrainVMMoving, p.Host, p.Reason, ""
	v.Stage, v.Percent = StagePreMigration.String(), 0
	v.Attempts++
	v.Migrations = append(v.Migrations, id)
	if v.StartedAt.IsZero() {
		v.StartedAt = d.c.now()
	}
	d.inflightTo[p.Host]++
	d.running++
	lim := Limits{MaxIncoming: d.req.MaxPerTarget, MaxOutgoing: d.req.Parallel}
	log := d.log.WithFields(logrus.Fields{"vm": v.VM, "dst": p.Host, "migration": id, "attempt": v.Attempts})
	log.Info("move started: " + p.Reason)
	name, kind, dest := v.VM, v.Kind, p.Host
	go func() {
		o := moveOutcome{idx: i}
		if kind == "live" {
			r := d.req.Live
			r.ID, r.VM, r.From, r.To, r.Limits, r.WaitForSlot = id, name, d.src.Name, dest, lim, true
			r.DryRun, r.PlanOnly = false, false
			r.Progress = func(p Progress) { d.progress(i, p.StageName, p.Percent, p.ProcessedBytes) }
			res, err := d.c.Migrate(moveCtx, r)
			o.err = err
			if res != nil {
				o.downtime, o.sent = res.Downtime, res.DataSent
			}
		} else {
			r := ColdRequest{ID: id, VM: name, From: d.src.Name, To: dest, Limits: lim, WaitForSlot: true,
				BandwidthMiBps: d.req.Live.BandwidthMiBps}
			r.Progress = func(p ColdProgress) {
				pct := 0.0
				if p.MoveTotalBytes > 0 {
					pct = 100 * float64(p.MovePositionBytes) / float64(p.MoveTotalBytes)
				}
				d.progress(i, p.StageName, pct, uint64(p.MoveSentBytes))
			}
			res, err := d.c.MigrateCold(moveCtx, r)
			o.err = err
			if res != nil {
				o.sent = uint64(res.SentBytes)
			}
		}
		d.done <- o
	}()
}

// progress records a move's stage and bytes. A new stage is saved at once
// (other processes follow stages), figures at most once a second.
func (d *drainRun) progress(i int, stage string, pct float64, sent uint64) {
	d.mu.Lock()
	v := &d.rep.VMs[i]
	newStage := v.Stage != stage
	v.Stage, v.Percent = stage, pct
	if sent > 0 { // stage messages carry no byte count
		v.SentBytes = sent
	}
	d.mu.Unlock()
	d.changed(context.Background(), newStage)
}

// finish settles a move's outcome.
func (d *drainRun) finish(ctx context.Context, o moveOutcome) {
	now := d.c.now()
	d.mu.Lock()
	v := &d.rep.VMs[o.idx]
	d.inflightTo[v.Dest]--
	log := d.log.WithFields(logrus.Fields{"vm": v.VM, "dst": v.Dest, "attempt": v.Attempts})
	v.SentBytes = o.sent
	switch classify(o.err) {
	case outMoved:
		v.State, v.Stage, v.Percent, v.DowntimeMS, v.FinishedAt = DrainVMMoved, StageActivation.String(), 100, o.downtime.Milliseconds(), now
		v.Reason = ""
		log.Info("moved")
	case outRequeue:
		v.Attempts--
		d.requeues[o.idx]++
		if d.requeues[o.idx] > maxRequeues {
			v.State, v.Error, v.FinishedAt = DrainVMFailed, o.err.Error(), now
			break
		}
		v.State, v.Reason = DrainVMWaiting, "will retry: "+o.err.Error()
		d.nextTry[o.idx] = now.Add(drainTick)
		log.WithError(o.err).Info("move refused for now; requeued")
	case outRetry:
		if v.Attempts <= d.req.Retries && !d.cancelled {
			wait := backoffFor(d.req.Backoff, v.Attempts)
			v.State, v.Error = DrainVMWaiting, o.err.Error()
			v.Reason = fmt.Sprintf("attempt %d failed; retrying in %s", v.Attempts, wait)
			d.nextTry[o.idx] = now.Add(wait)
			log.WithError(o.err).Warn("move failed; will retry")
			break
		}
		fallthrough
	default:
		v.State, v.Error, v.FinishedAt = DrainVMFailed, o.err.Error(), now
		v.NeedsRecovery = errors.Is(o.err, ErrNeedsRecovery)
		log.WithError(o.err).Warn("move failed")
	}
	d.mu.Unlock()
	d.changed(ctx, true)
}

// tally recomputes the counters; d.mu is held (or the run is single-threaded).
func (d *drainRun) tally() {
	r := d.rep
	r.Moved, r.Failed, r.Left, r.SentBytes = 0, 0, 0, 0
	for _, v := range r.VMs {
		r.SentBytes += v.SentBytes
		switch v.State {
		case DrainVMMoved:
			r.Moved++
		case DrainVMFailed:
			r.Failed++
		case DrainVMPending, DrainVMWaiting, DrainVMMoving:
			r.Left++
		}
	}
}

// changed publishes the report: to Progress always, to the store at most
// once a second unless force.
func (d *drainRun) changed(ctx context.Context, force bool) {
	d.mu.Lock()
	d.tally()
	snap := *d.rep
	snap.VMs = append([]DrainVM(nil), d.rep.VMs...)
	save := d.persisted && (force || time.Since(d.lastSave) >= time.Second)
	if save {
		d.lastSave = time.Now()
	}
	d.mu.Unlock()
	if d.req.Progress != nil {
		d.req.Progress(snap)
	}
	if save {
		if err := d.c.Journal.saveDrain(context.WithoutCancel(ctx), &snap); err != nil {
			d.log.WithError(err).Error("saving the drain report")
		}
	}
}

// end lists what is left on the host, sets the final state and error.
func (d *drainRun) end(ctx context.Context, failure error) (*DrainReport, error) {
	bg := context.WithoutCancel(ctx)
	r := d.rep
	left, lerr := d.srcConn.ListDomains()
	d.mu.Lock()
	byName := map[string]DrainVM{}
	for _, v := range r.VMs {
		byName[v.VM] = v
	}
	r.Remaining = nil
	needsRecover := false
	if d.cancelled {
		// Requeued after the cancel: they will not start either.
		for i := range r.VMs {
			if v := &r.VMs[i]; v.State == DrainVMPending || v.State == DrainVMWaiting {
				v.State, v.Reason = DrainVMNotStarted, "drain cancelled before its turn"
			}
		}
	}
	for _, di := range left {
		if d.req.RunningOnly && !di.State.Active() {
			continue
		}
		why := "not moved"
		if v, ok := byName[di.Name]; ok {
			why = firstNonEmpty(v.Error, v.Reason, v.State)
			needsRecover = needsRecover || v.NeedsRecovery
		} else {
			why = "appeared during the drain"
		}
		r.Remaining = append(r.Remaining, fmt.Sprintf("%s (%s): %s", di.Name, di.State, why))
	}
	sort.Strings(r.Remaining)
	r.Empty = lerr == nil && len(r.Remaining) == 0 && failure == nil
	r.FinishedAt = d.c.now()
	switch {
	case r.Empty:
		r.State = DrainDone
	case d.cancelled:
		r.State = DrainCancelled
	default:
		r.State = DrainIncomplete
	}
	if failure != nil {
		r.Error = failure.Error()
	} else if lerr != nil {
		r.Error = "listing what is left: " + lerr.Error()
	}
	d.tally()
	d.mu.Unlock()
	d.changed(bg, true)
	d.log.WithFields(logrus.Fields{"state": r.State, "moved": r.Moved, "failed": r.Failed}).Info("drain finished")
	switch {
	case failure != nil:
		return r, failure
	case r.Empty:
		return r, nil
	}
	detail := r.Error
	if len(r.Remaining) > 0 {
		detail = strings.Join(r.Remaining, "; ")
	}
	var err error
	if d.cancelled {
		err = fmt.Errorf("%w: %s still has %d VM(s): %s", ErrDrainCancelled, r.Host, len(r.Remaining), detail)
	} else {
		err = fmt.Errorf("%w: %s still has %d VM(s): %s", ErrDrainIncomplete, r.Host, len(r.Remaining), detail)
	}
	if needsRecover {
		err = fmt.Errorf("%w; %w", err, ErrNeedsRecovery)
	}
	return r, err
}

// short abbreviates an id for messages.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
