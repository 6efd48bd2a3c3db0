package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/virt"
)

// Cold moves (DESIGN.md §4) are journaled as kind "cold" in the migrations
// table, with the stage columns reused as:
//
//	pre-migration  checks (VM found, shut off or --shutdown allowed)
//	reservation    plan made, destination space reserved
//	pre-copy       artifacts being copied and verified
//	stop-and-copy  the destination definition exists and was verified
//	commitment     the source is being removed: no rollback from here
//	activation     done (started on the destination with --start)
//
// Each artifact's state, destination path, bytes and checksum are in
// cold_artifacts, so recover can revert or finish and a re-run can resume.

// ErrInsufficientStorage: the destination pool lacks the space for the copies.
var ErrInsufficientStorage = errors.New("not enough free storage on the destination")

// StateResumed closes a cold row whose copies a later run took over.
const StateResumed = "resumed"

// DefaultShutdownTimeout is how long --shutdown waits for the guest.
const DefaultShutdownTimeout = 60 * time.Second

const coldSchema = `
CREATE TABLE IF NOT EXISTS cold_artifacts (
	migration_id TEXT NOT NULL,
	idx INTEGER NOT NULL,
	kind TEXT NOT NULL,
	target TEXT NOT NULL DEFAULT '',
	src_path TEXT NOT NULL,
	dst_pool TEXT NOT NULL DEFAULT '',
	dst_path TEXT NOT NULL,
	format TEXT NOT NULL DEFAULT '',
	capacity_bytes INTEGER NOT NULL DEFAULT 0,
	allocated_bytes INTEGER NOT NULL DEFAULT 0,
	physical_bytes INTEGER NOT NULL DEFAULT 0,
	sent_bytes INTEGER NOT NULL DEFAULT 0,
	sparse INTEGER NOT NULL DEFAULT 0,
	keep_on_source INTEGER NOT NULL DEFAULT 0,
	skipped INTEGER NOT NULL DEFAULT 0,
	checksum TEXT NOT NULL DEFAULT '',
	state TEXT NOT NULL,
	duration_ms INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (migration_id, idx)
);
CREATE TABLE IF NOT EXISTS cold_artifact_source (
	migration_id TEXT NOT NULL,
	idx INTEGER NOT NULL,
	source_stamp TEXT NOT NULL DEFAULT '',
	keep_reason TEXT NOT NULL DEFAULT '',
	kept_by TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (migration_id, idx)
);
`

var coldSchemaOnce sync.Map // *sql.DB -> struct{}

func (j *Journal) ensureCold(ctx context.Context) error {
	if _, done := coldSchemaOnce.Load(j.db); done {
		return nil
	}
	if _, err := j.db.ExecContext(ctx, coldSchema); err != nil {
		return fmt.Errorf("journal schema (cold_artifacts): %w", err)
	}
	coldSchemaOnce.Store(j.db, struct{}{})
	return nil
}

// SaveArtifact records one artifact's state.
func (j *Journal) SaveArtifact(ctx context.Context, id string, a coldmove.Artifact) error {
	if err := j.ensureCold(ctx); err != nil {
		return err
	}
	_, err := j.db.ExecContext(ctx, `INSERT INTO cold_artifacts
		(migration_id, idx, kind, target, src_path, dst_pool, dst_path, format, capacity_bytes, allocated_bytes, physical_bytes,
		 sent_bytes, sparse, keep_on_source, skipped, checksum, state, duration_ms, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (migration_id, idx) DO UPDATE SET dst_path = excluded.dst_path, sent_bytes = excluded.sent_bytes,
		 sparse = excluded.sparse, skipped = excluded.skipped, checksum = excluded.checksum, state = excluded.state,
		 keep_on_source = excluded.keep_on_source, duration_ms = excluded.duration_ms, updated_at = excluded.updated_at`,
		id, a.Index, string(a.Kind), a.Target, a.SrcPath, a.DstPool, a.DstPath, a.Format, int64(a.CapacityBytes), int64(a.AllocatedBytes),
		int64(a.PhysicalBytes), a.SentBytes, a.Sparse, a.KeepOnSource, a.Skipped, a.Checksum, a.State, a.DurationMS, ms(j.now()))
	if err != nil {
		return fmt.Errorf("journal artifact %s/%d: %w", id, a.Index, err)
	}
	// What the source file looked like when the copy began, and why it was
	// kept: resume and recover decide on these.
	keptBy, _ := json.Marshal(a.KeptBy)
	_, err = j.db.ExecContext(ctx, `INSERT INTO cold_artifact_source (migration_id, idx, source_stamp, keep_reason, kept_by)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (migration_id, idx) DO UPDATE SET source_stamp = excluded.source_stamp,
		keep_reason = excluded.keep_reason, kept_by = excluded.kept_by`, id, a.Index, a.SourceStamp, a.KeepReason, string(keptBy))
	if err != nil {
		return fmt.Errorf("journal artifact %s/%d: %w", id, a.Index, err)
	}
	return nil
}

// Artifacts returns a cold migration's artifacts in plan order.
func (j *Journal) Artifacts(ctx context.Context, id string) ([]coldmove.Artifact, error) {
	if err := j.ensureCold(ctx); err != nil {
		return nil, err
	}
	rows, err := j.db.QueryContext(ctx, `SELECT a.idx, a.kind, a.target, a.src_path, a.dst_pool, a.dst_path, a.format, a.capacity_bytes, a.allocated_bytes,
		a.physical_bytes, a.sent_bytes, a.sparse, a.keep_on_source, a.skipped, a.checksum, a.state, a.duration_ms,
		COALESCE(s.source_stamp, ''), COALESCE(s.keep_reason, ''), COALESCE(s.kept_by, '')
		FROM cold_artifacts a LEFT JOIN cold_artifact_source s ON s.migration_id = a.migration_id AND s.idx = a.idx
		WHERE a.migration_id = ? ORDER BY a.idx`, id)
	if err != nil {
		return nil, fmt.Errorf("journal artifacts: %w", err)
	}
	defer rows.Close()
	var out []coldmove.Artifact
	for rows.Next() {
		var a coldmove.Artifact
		var kind string
		var capa, alloc, phys int64
		var keptBy string
		if err := rows.Scan(&a.Index, &kind, &a.Target, &a.SrcPath, &a.DstPool, &a.DstPath, &a.Format, &capa, &alloc, &phys,
			&a.SentBytes, &a.Sparse, &a.KeepOnSource, &a.Skipped, &a.Checksum, &a.State, &a.DurationMS,
			&a.SourceStamp, &a.KeepReason, &keptBy); err != nil {
			return nil, fmt.Errorf("journal artifacts: %w", err)
		}
		if keptBy != "" && keptBy != "null" {
			_ = json.Unmarshal([]byte(keptBy), &a.KeptBy)
		}
		a.Kind, a.CapacityBytes, a.AllocatedBytes, a.PhysicalBytes = coldmove.Kind(kind), uint64(capa), uint64(alloc), uint64(phys)
		out = append(out, a)
	}
	return out, rows.Err()
}

// ColdRequest is one cold move.
type ColdRequest struct {
	ID     string // empty: a new UUID
	VM     string
	From   string // empty: search the inventory
	To     string
	ToPool string // destination pool for disks; empty: the source disk's pool name if the destination has it, else "default"
	// PlanOnly runs the checks and returns the plan; nothing changes.
	PlanOnly   bool
	KeepSource bool
	Start      bool
	// Shutdown allows stopping a running VM first: a guest shutdown request,
	// waiting ShutdownTimeout, then (Force) destroying it.
	Shutdown        bool
	ShutdownTimeout time.Duration
	Force           bool
	BandwidthMiBps  uint64 // cap on the copy's data rate; 0: none
	// Limits and WaitForSlot as in Request.
	Limits      Limits
	WaitForSlot bool
	Progress    func(ColdProgress)
}

// ColdProgress is a cold move's progress.
type ColdProgress struct {
	coldmove.Progress
	ID              string `json:"id"`
	VM              string `json:"vm"`
	Stage           Stage  `json:"-"`
	StageName       string `json:"stage"`
	ElapsedMS       int64  `json:"elapsed_ms"`
	RateBytesPerSec uint64 `json:"rate_bytes_per_sec"` // data on the wire
	ETAMS           int64  `json:"eta_ms"`
}

// ColdResult summarises a cold move.
type ColdResult struct {
	ID          string               `json:"id"`
	Kind        string               `json:"kind"`
	VM          string               `json:"vm"`
	VMUUID      string               `json:"vm_uuid,omitempty"`
	Source      string               `json:"source"`
	Dest        string               `json:"destination"`
	State       string               `json:"state"`
	PlanOnly    bool                 `json:"plan_only,omitempty"`
	Checks      []Check              `json:"checks,omitempty"`
	Plan        *coldmove.Plan       `json:"plan,omitempty"`
	Artifacts   []coldmove.Artifact  `json:"artifacts,omitempty"`
	ResumedFrom string               `json:"resumed_from,omitempty"`
	Shutdown    string               `json:"shutdown,omitempty"`
	KeepSource  bool                 `json:"keep_source,omitempty"`
	Started     bool                 `json:"started"`
	StartedAt   time.Time            `json:"started_at"`
	Finished    time.Time            `json:"finished_at"`
	TotalMS     int64                `json:"total_ms"`
	SentBytes   int64                `json:"sent_bytes"`
	Warnings    []string             `json:"warnings,omitempty"`
	HookErrors  []string             `json:"hook_errors,omitempty"`
	Error       string               `json:"error,omitempty"`
	Pools       []coldmove.PoolSpace `json:"-"`
}

// cold is the state of one MigrateCold call.
type cold struct {
	*migration
	creq     ColdRequest
	cres     *ColdResult
	prev     map[string]coldmove.Artifact
	prevRow  *Record
	plan     *coldmove.Plan
	copyFrom time.Time
}

// MigrateCold moves a shut-off VM (or, with Shutdown, one it stops first):
// its disks, NVRAM, logs and definition, over libvirt storage streams.
// Refusals change nothing (ErrRefused); a failure before the source is
// touched removes what was copied (ErrRolledBack); otherwise the row is left
// for `ferry recover` (ErrNeedsRecovery).
func (c *Controller) MigrateCold(ctx context.Context, req ColdRequest) (*ColdResult, error) {
	if req.ShutdownTimeout == 0 {
		req.ShutdownTimeout = DefaultShutdownTimeout
	}
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	res := &ColdResult{ID: id, Kind: "cold", VM: req.VM, StartedAt: c.now(), PlanOnly: req.PlanOnly, KeepSource: req.KeepSource}
	m := &migration{c: c, req: Request{VM: req.VM, From: req.From, To: req.To, DryRun: req.PlanOnly},
		res: &Result{ID: id, VM: req.VM, Started: res.StartedAt, DryRun: req.PlanOnly},
		rec: &Record{ID: id, Kind: "cold", VM: req.VM, State: StateRunning, Owner: ownerToken()}}
	m.log = c.log().WithFields(logrus.Fields{"migration": id, "vm": req.VM, "kind": "cold"})
	cm := &cold{migration: m, creq: req, cres: res}
	defer func() {
		for _, h := range []virt.Host{m.srcConn, m.dstConn} {
			if h != nil {
				h.Close()
			}
		}
	}()
	opts, _ := json.Marshal(map[string]any{"cold": true, "to_pool": req.ToPool, "keep_source": req.KeepSource, "start": req.Start,
		"shutdown": req.Shutdown, "shutdown_timeout_ms": req.ShutdownTimeout.Milliseconds(), "force": req.Force, "bandwidth_mibps": req.BandwidthMiBps})
	m.rec.Options = string(opts)
	if !req.PlanOnly {
		if err := c.Journal.ensureCold(ctx); err != nil {
			return res, err
		}
		if err := c.Journal.Create(ctx, m.rec); err != nil {
			return res, err
		}
		m.journaled = true
	}
	err := cm.preflight(ctx)
	res.Checks = m.res.Checks
	if err != nil {
		return cm.refusedCold(ctx, err)
	}
	if req.PlanOnly {
		res.State = "plan"
		res.Finished = c.now()
		res.TotalMS = res.Finished.Sub(res.StartedAt).Milliseconds()
		return res, nil
	}
	return cm.run(ctx)
}

func (cm *cold) refusedCold(ctx context.Context, err error) (*ColdResult, error) {
	_, err = cm.refused(ctx, err)
	if cm.prevRow != nil {
		// The interrupted move this run took over stays for the next run or
		// for recover: its copies are still on the destination.
		bg := context.WithoutCancel(ctx)
		if jerr := cm.c.Journal.Update(bg, cm.prevRow.ID, map[string]any{"state": cm.prevRow.State, "finished_at": nil, "notes": cm.prevRow.Notes}); jerr != nil {
			cm.log.WithError(jerr).Error("journal: handing the interrupted move back")
		}
	}
	cm.cres.Checks = cm.res.Checks
	cm.cres.Source, cm.cres.Dest, cm.cres.VMUUID = cm.src.Name, cm.dst.Name, cm.info.UUID
	cm.cres.State, cm.cres.Error, cm.cres.Finished = StateRefused, err.Error(), cm.c.now()
	return cm.cres, err
}

// preflight: find the VM, check its state and the destination, plan, reserve.
func (cm *cold) preflight(ctx context.Context) error {
	c, req := cm.c, cm.creq
	if !ValidName(req.VM) {
		if _, err := uuid.Parse(req.VM); err != nil {
			return refuse(ErrInvalidRequest, nil, "VM %q is not a valid name (letters, digits, '.', '_', '-') nor a UUID", req.VM)
		}
	}
	if req.To == "" {
		return refuse(ErrInvalidRequest, nil, "no destination: give --to HOST (an inventory name or a libvirt URI)")
	}
	if req.ShutdownTimeout < 0 {
		return refuse(ErrInvalidRequest, nil, "--shutdown-timeout must be positive")
	}
	if err := req.checkRanges(); err != nil {
		return err
	}
	var err error
	if cm.dst, err = c.Inventory.Resolve(req.To); err != nil {
		return err
	}
	if req.From != "" {
		if cm.src, err = c.Inventory.Resolve(req.From); err != nil {
			return err
		}
		if cm.src.URI == cm.dst.URI {
			return refuse(ErrSameHost, nil, "source and destination are both %s: nothing to move", cm.src.Name)
		}
	}
	cm.cres.Dest = cm.dst.Name
	if err := cm.findSource(ctx); err != nil {
		return err
	}
	cm.cres.Source, cm.cres.VMUUID = cm.src.Name, cm.info.UUID
	cm.log = cm.log.WithFields(logrus.Fields{"src": cm.src.Name, "dst": cm.dst.Name})
	if cm.src.URI == cm.dst.URI {
		return refuse(ErrSameHost, nil, "VM %s is already on %s, the requested destination", req.VM, cm.dst.Name)
	}
	if cm.info.State.Active() && !req.Shutdown {
		return cm.check("vm-stopped", refuse(ErrInvalidRequest, nil, "VM %s is %s on %s: a cold move needs it shut off; move it live (ferry migrate %s --to %s) or let ferry stop it first (--shutdown, with --force to destroy it after --shutdown-timeout)",
			cm.info.Name, cm.info.State, cm.src.Name, cm.info.Name, req.To), "")
	}
	if cm.info.State.Active() {
		_ = cm.check("vm-stopped", nil, fmt.Sprintf("%s is %s: it will be shut down first (timeout %s, force %v)", cm.info.Name, cm.info.State, req.ShutdownTimeout, req.Force))
	} else {
		_ = cm.check("vm-stopped", nil, fmt.Sprintf("%s is %s on %s", cm.info.Name, cm.info.State, cm.src.Name))
	}
	if !cm.info.Persistent {
		return refuse(ErrInvalidRequest, nil, "VM %s is transient on %s: a cold move needs a persistent definition", cm.info.Name, cm.src.Name)
	}
	// The claim comes before the job check, so that a move losing a race
	// names the winner's migration rather than "a job in progress".
	if err := cm.checkOpenRow(ctx); err != nil {
		return err
	}
	if js, err := cm.dom.JobStats(false); err == nil && js.Type != virt.JobNone && js.Type != "" {
		return refuse(ErrBusy, nil, "VM %s has a job in progress on %s; wait for it or abort it with virsh domjobabort", cm.info.Name, cm.src.Name)
	}
	xml, err := cm.dom.XML(false)
	if err != nil {
		return err
	}
	cm.rec.VMXML = xml
	if cm.journaled {
		if err := c.Journal.Update(ctx, cm.rec.ID, map[string]any{"vm_name": cm.info.Name, "vm_uuid": cm.info.UUID,
			"src_name": cm.src.Name, "src_uri": cm.src.URI, "dst_name": cm.dst.Name, "dst_uri": cm.dst.URI,
			"memory_bytes": int64(cm.info.MemoryBytes), "vm_xml": xml}); err != nil {
			return err
		}
	}
	cm.coldProgress(coldmove.Progress{Step: "check", Message: fmt.Sprintf("%s found %s on %s", cm.info.Name, cm.info.State, cm.src.Name)}, StagePreMigration)
	if err := cm.preMigrationHooks(ctx); err != nil {
		return err
	}
	return cm.reserveCold(ctx, xml)
}

// checkOpenRow claims the VM for this move (Journal.Claim): it refuses a VM
// with an unfinished migration, except an interrupted cold move to the same
// destination whose process is gone, which this run takes over and resumes.
func (cm *cold) checkOpenRow(ctx context.Context) error {
	if cm.creq.PlanOnly {
		return nil
	}
	open, err := cm.c.Journal.Claim(ctx, cm.rec.ID, cm.info.UUID, nil, func(open *Record, alive bool) bool {
		return open.Kind == "cold" && open.DestURI == cm.dst.URI && open.SourceURI == cm.src.URI &&
			open.Stage < StageCommitment && (open.State == StateFailed || !alive)
	})
	if err != nil || open == nil {
		return err
	}
	cm.prevRow = open
	arts, err := cm.c.Journal.Artifacts(ctx, open.ID)
	if err != nil {
		return err
	}
	cm.prev = map[string]coldmove.Artifact{}
	for _, a := range arts {
		cm.prev[a.Key()] = a
	}
	cm.cres.ResumedFrom = open.ID
	// Its space is counted again by this run's reservation.
	if err := cm.c.Journal.Release(ctx, open.ID); err != nil {
		return err
	}
	_ = cm.check("resume", nil, fmt.Sprintf("resuming the interrupted cold move %s (%d artifacts recorded)", open.ID, len(arts)))
	return nil
}

// reserveCold checks the destination, plans the artifacts and reserves the
// space in the destination's disk pool.
func (cm *cold) reserveCold(ctx context.Context, xml string) error {
	c := cm.c
	conn, err := c.dial(ctx, cm.dst)
	if err := cm.check("destination-reachable", err, cm.dst.URI); err != nil {
		return err
	}
	cm.dstConn = conn
	srcID, err := cm.srcConn.Identity()
	if err != nil {
		return refuse(ErrUnreachable, err, "source %s: %v", cm.src.Name, err)
	}
	dstID, err := conn.Identity()
	if err != nil {
		return refuse(ErrUnreachable, err, "destination %s: %v", cm.dst.Name, err)
	}
	if srcID.UUID != "" && srcID.UUID == dstID.UUID {
		return cm.check("distinct-hosts", refuse(ErrSameHost, nil, "%s and %s are the same libvirt host (host UUID %s): nothing to move", cm.src.Name, cm.dst.Name, dstID.UUID), "")
	}
	_ = cm.check("distinct-hosts", nil, "host UUIDs differ")
	for _, key := range []string{cm.info.Name, cm.info.UUID} {
		d, err := conn.LookupDomain(key)
		if errors.Is(err, virt.ErrNotFound) {
			continue
		}
		if err != nil {
			return refuse(ErrUnreachable, err, "destination %s: %v", cm.dst.Name, err)
		}
		di, _ := d.Info()
		if cm.prevRow != nil && cm.prevRow.Stage >= StageStopAndCopy && di.UUID == cm.info.UUID && !di.State.Active() {
			// The interrupted run's own definition: this run defines it again.
			if err := d.Undefine(true); err != nil {
				return refuse(ErrUnreachable, err, "removing the interrupted run's definition on %s: %v", cm.dst.Name, err)
			}
			continue
		}
		return cm.check("no-name-clash", refuse(ErrNameClash, nil, "destination %s already has a domain %q (UUID %s, %s); undefine it there or rename the VM", cm.dst.Name, di.Name, di.UUID, di.State), "")
	}
	_ = cm.check("no-name-clash", nil, "no domain with that name or UUID")
	if cm.creq.Start {
		if capa, err := conn.Capacity(); err == nil && capa.FreeMemoryBytes < cm.info.MemoryBytes+cm.dst.ReservedBytes() {
			return cm.check("memory", refuse(ErrInsufficientMemory, nil, "--start: %s has %s free after its reserve, the VM needs %s",
				cm.dst.Name, mib(sub(capa.FreeMemoryBytes, cm.dst.ReservedBytes())), mib(cm.info.MemoryBytes)), "")
		}
	}
	srcS, err := virt.StorageOf(cm.srcConn)
	if err != nil {
		return refuse(ErrInvalidRequest, err, "source %s: %v", cm.src.Name, err)
	}
	dstS, err := virt.StorageOf(conn)
	if err != nil {
		return refuse(ErrInvalidRequest, err, "destination %s: %v", cm.dst.Name, err)
	}
	plan, err := coldmove.BuildPlan(xml, srcS, dstS, coldmove.PlanOptions{ToPool: cm.creq.ToPool, SourceName: cm.src.Name, Previous: cm.prev})
	if err != nil {
		return refuse(ErrInvalidRequest, err, "planning the move of %s: %v", cm.info.Name, err)
	}
	cm.plan, cm.cres.Plan, cm.cres.Pools = plan, plan, plan.Pools
	if len(plan.Problems) > 0 {
		kind := ErrInvalidRequest
		for _, p := range plan.Pools {
			if !p.Enough {
				kind = ErrInsufficientStorage
			}
		}
		return cm.check("storage", refuse(kind, nil, "cannot move %s to %s: %s", cm.info.Name, cm.dst.Name, strings.Join(plan.Problems, "; ")), "")
	}
	var parts []string
	for _, p := range plan.Pools {
		if p.New {
			parts = append(parts, fmt.Sprintf("%s needs %s (new directory)", p.Path, coldmove.HumanBytes(p.NeedBytes)))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s needs %s of %s free", p.Path, coldmove.HumanBytes(p.NeedBytes), coldmove.HumanBytes(p.AvailableBytes)))
	}
	_ = cm.check("storage", nil, strings.Join(parts, "; "))
	// One reservation per migration: the pool taking the disks (the first
	// pool of the plan); the others were checked above.
	if !cm.creq.PlanOnly {
		if err := cm.acquireSlot(ctx, srcID.UUID, dstID.UUID, cm.creq.Limits, cm.creq.WaitForSlot); err != nil {
			return cm.check("limits", err, "")
		}
	}
	if len(plan.Pools) > 0 {
		p := plan.Pools[0]
		key := "storage:" + dstID.UUID + ":" + p.Path
		if cm.creq.PlanOnly {
			held, err := c.Journal.Reserved(ctx, key)
			if err != nil {
				return err
			}
			if held+p.NeedBytes > p.AvailableBytes {
				return cm.check("storage-reservations", refuse(ErrInsufficientStorage, nil, "not enough space in %s on %s once the moves in flight get theirs: %s needed, %s free, %s held",
					p.Path, cm.dst.Name, coldmove.HumanBytes(p.NeedBytes), coldmove.HumanBytes(p.AvailableBytes), coldmove.HumanBytes(held)), "")
			}
		} else if err := c.Journal.Reserve(ctx, cm.rec.ID, key, cm.dst.Name+":"+p.Path, p.NeedBytes, p.AvailableBytes); err != nil {
			return cm.check("storage-reservations", refuse(ErrInsufficientStorage, err, "not enough space in %s on %s once the moves in flight get theirs (%s needed)", p.Path, cm.dst.Name, coldmove.HumanBytes(p.NeedBytes)), "")
		}
	}
	if cm.journaled {
		if err := c.Journal.EnterStage(ctx, cm.rec.ID, StageReservation, c.now(), map[string]any{"data_total": int64(plan.BytesToMove)}); err != nil {
			return err
		}
		for _, a := range plan.Artifacts {
			if err := c.Journal.SaveArtifact(ctx, cm.rec.ID, a); err != nil {
				return err
			}
		}
	}
	how := "sparse streams"
	if !plan.Sparse {
		how = plan.SparseNote
	}
	cm.coldProgress(coldmove.Progress{Step: "plan", Message: fmt.Sprintf("%d artifacts, %s to move (%s of files), %s", len(plan.Artifacts),
		coldmove.HumanBytes(plan.BytesToMove), coldmove.HumanBytes(plan.TotalBytes), how)}, StageReservation)
	return nil
}

// coldProgress reports progress with the journal stage, rate and ETA.
func (cm *cold) coldProgress(p coldmove.Progress, s Stage) {
	if cm.creq.Progress == nil {
		return
	}
	cp := ColdProgress{Progress: p, ID: cm.rec.ID, VM: cm.creq.VM, Stage: s, StageName: s.String()}
	cp.ElapsedMS = cm.c.now().Sub(cm.cres.StartedAt).Milliseconds()
	if !cm.copyFrom.IsZero() {
		el := cm.c.now().Sub(cm.copyFrom).Seconds()
		if el > 0.2 {
			cp.RateBytesPerSec = uint64(float64(p.MoveSentBytes) / el)
			if pos := float64(p.MovePositionBytes) / el; pos > 0 && p.MoveTotalBytes > p.MovePositionBytes {
				cp.ETAMS = int64(float64(p.MoveTotalBytes-p.MovePositionBytes) / pos * 1000)
			}
		}
	}
	cm.creq.Progress(cp)
}

// coldRecorder journals a move's artifacts and stages.
type coldRecorder struct {
	cm  *cold
	ctx context.Context
	mu  sync.Mutex
	cur Stage
}

func (r *coldRecorder) Artifact(a coldmove.Artifact) error {
	return r.cm.c.Journal.SaveArtifact(r.ctx, r.cm.rec.ID, a)
}

var coldStages = map[string]Stage{
	coldmove.StageCopying: StagePreCopy, coldmove.StageDefined: StageStopAndCopy,
	coldmove.StageCommitted: StageCommitment, coldmove.StageDone: StageActivation,
}

func (r *coldRecorder) Stage(s string) error {
	st, ok := coldStages[s]
	if !ok {
		return nil
	}
	r.mu.Lock()
	r.cur = st
	r.mu.Unlock()
	if st == StagePreCopy {
		r.cm.copyFrom = r.cm.c.now()
	}
	return r.cm.c.Journal.EnterStage(r.ctx, r.cm.rec.ID, st, r.cm.c.now(), nil)
}

func (r *coldRecorder) stage() Stage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// run carries out the move once the checks passed and space is reserved.
func (cm *cold) run(ctx context.Context) (*ColdResult, error) {
	c, id := cm.c, cm.rec.ID
	bg := context.WithoutCancel(ctx)
	cm.fire(bg, cm.payload(HookReservation))
	srcS, _ := virt.StorageOf(cm.srcConn)
	dstS, _ := virt.StorageOf(cm.dstConn)
	rec := &coldRecorder{cm: cm, ctx: bg, cur: StageReservation}
	mv := &coldmove.Move{Src: cm.srcConn, Dst: cm.dstConn, SrcStorage: srcS, DstStorage: dstS, Domain: cm.dom, Plan: cm.plan,
		KeepSource: cm.creq.KeepSource, Start: cm.creq.Start, Previous: cm.prev, Recorder: rec,
		BandwidthBytesPerSec: uint64(BandwidthBytesPerSec(cm.creq.BandwidthMiBps)),
		Observe:              func() (*virt.HostUsage, error) { return virt.ObserveUsage(cm.srcConn) },
		Progress:             func(p coldmove.Progress) { cm.coldProgress(p, rec.stage()) },
		OnStep: func(ev coldmove.StepEvent) {
			l := cm.log.WithFields(logrus.Fields{"step": ev.Step, "phase": ev.Phase})
			if ev.Err != nil {
				l.WithError(ev.Err).Warn("cold move step")
			} else {
				l.Info("cold move step")
			}
		}}
	if cm.info.State.Active() {
		mv.Shutdown = &coldmove.ShutdownPolicy{Timeout: cm.creq.ShutdownTimeout, Force: cm.creq.Force}
	}
	out, err := mv.Run(ctx)
	res := cm.cres
	res.Artifacts, res.SentBytes, res.Shutdown, res.Started, res.Warnings = out.Artifacts, out.SentBytes, out.Shutdown, out.Started, out.Warnings
	res.Finished = c.now()
	res.TotalMS = res.Finished.Sub(res.StartedAt).Milliseconds()
	cols := map[string]any{"data_sent": out.SentBytes}
	if rb, ok := coldmove.IsRollback(err); ok {
		if rb.Complete() {
			msg := err.Error()
			if out.Shutdown != "" {
				msg += "; the VM was started again on the source"
			}
			res.State, res.Error = StateRolledBack, msg
			_ = c.Journal.Release(bg, id)
			if jerr := c.Journal.Finish(bg, id, StateRolledBack, msg, cols); jerr != nil {
				cm.log.WithError(jerr).Error("journal")
			}
			rb := cm.payload(HookRollback)
			rb.Stage, rb.Error = rec.stage().String(), msg
			cm.fire(bg, rb)
			res.HookErrors = cm.res.HookErrors
			return res, fmt.Errorf("%w: %s stays on %s, nothing of it remains on %s: %w", ErrRolledBack, cm.info.Name, cm.src.Name, cm.dst.Name, err)
		}
		res.State, res.Error = StateFailed, err.Error()
		cols["state"], cols["error"] = StateFailed, err.Error()
		_ = c.Journal.Update(bg, id, cols)
		return res, fmt.Errorf("%w (ferry recover will remove the copies from %s; the source was not touched): %w", ErrNeedsRecovery, cm.dst.Name, err)
	}
	if err != nil {
		res.State, res.Error = StateFailed, err.Error()
		cols["state"], cols["error"] = StateFailed, err.Error()
		_ = c.Journal.Update(bg, id, cols)
		return res, fmt.Errorf("%w (ferry recover will finish removing the source): %w", ErrNeedsRecovery, err)
	}
	cm.fire(bg, cm.payload(HookActivation))
	res.HookErrors = cm.res.HookErrors
	_ = c.Journal.Release(bg, id)
	var notes []string
	notes = append(notes, out.Warnings...)
	notes = append(notes, res.HookErrors...)
	if out.Started {
		notes = append(notes, "started on "+cm.dst.Name)
	}
	if cm.prevRow != nil {
		notes = append(notes, "resumed "+cm.prevRow.ID)
	}
	cols["notes"] = strings.Join(notes, "; ")
	if rec.stage() < StageActivation {
		_ = c.Journal.EnterStage(bg, id, StageActivation, c.now(), nil)
	}
	if jerr := c.Journal.Finish(bg, id, StateCompleted, "", cols); jerr != nil {
		cm.log.WithError(jerr).Error("journal")
	}
	res.State = StateCompleted
	cm.log.WithField("sent_bytes", out.SentBytes).Info("cold move completed")
	return res, nil
}

// coldOptions is what recover needs from a cold row's options.
type coldOptions struct {
	KeepSource bool `json:"keep_source"`
	Shutdown   bool `json:"shutdown"`
}

// recoverCold reverts a cold move interrupted before the commit point
// (destination copies and definition removed; the source was never
// touched) or finishes one interrupted after it (source definition and
// files removed).
func (c *Controller) recoverCold(ctx context.Context, r *Record, res *RecoverResult) error {
	log := c.log().WithFields(logrus.Fields{"migration": r.ID, "vm": r.VM, "kind": "cold"})
	arts, err := c.Journal.Artifacts(ctx, r.ID)
	if err != nil {
		return err
	}
	var opt coldOptions
	_ = json.Unmarshal([]byte(r.Options), &opt)
	if r.VMUUID == "" || r.DestURI == "" || r.Stage < StageReservation {
		_ = c.Journal.Release(ctx, r.ID)
		res.After = StateRefused
		return c.Journal.Finish(ctx, r.ID, StateRefused, "interrupted during pre-flight checks; nothing was changed", map[string]any{"notes": "recovered"})
	}
	if r.Stage < StageCommitment {
		dst, err := c.dial(ctx, HostEntry{Name: r.Dest, URI: r.DestURI})
		if err != nil {
			return fmt.Errorf("cannot remove the copies without the destination: %w", err)
		}
		defer dst.Close()
		// The destination definition is ours only while the source still
		// holds the VM (before the commit point it always does).
		if d, err := dst.LookupDomain(r.VMUUID); err == nil {
			src, serr := c.dial(ctx, HostEntry{Name: r.Source, URI: r.SourceURI})
			if serr != nil {
				return fmt.Errorf("cannot decide about the destination's definition without the source: %w", serr)
			}
			_, lerr := src.LookupDomain(r.VMUUID)
			src.Close()
			if lerr != nil {
				return fmt.Errorf("the source no longer has VM %s although the move had not committed: resolve by hand (%v)", r.VM, lerr)
			}
			if info, _ := d.Info(); info.State.Active() {
				return fmt.Errorf("the destination's copy of %s is running although the move had not committed: resolve by hand", r.VM)
			}
			if err := d.Undefine(true); err != nil {
				return err
			}
		} else if !errors.Is(err, virt.ErrNotFound) {
			return err
		}
		dstS, err := virt.StorageOf(dst)
		if err != nil {
			return err
		}
		var paths []string
		var touched []coldmove.Artifact
		for _, a := range arts {
			if a.State == coldmove.StateCopying || a.State == coldmove.StateVerified {
				paths = append(paths, a.DstPath)
				touched = append(touched, a)
			}
		}
		if err := coldmove.RemoveFiles(dstS, paths); err != nil {
			return fmt.Errorf("removing the copies on %s: %w", r.Dest, err)
		}
		for _, a := range touched {
			a.State = coldmove.StateRemoved
			_ = c.Journal.SaveArtifact(ctx, r.ID, a)
		}
		_ = c.Journal.Release(ctx, r.ID)
		res.After, res.RunsOn = StateRolledBack, r.Source
		res.Note = fmt.Sprintf("%d copies removed from %s; the source was not touched", len(paths), r.Dest)
		if opt.Shutdown {
			res.Note += " (a VM ferry had shut down for the move stays shut off)"
		}
		errText := r.Error
		if errText == "" {
			errText = "interrupted (ferry stopped during the cold move); reverted by recover"
		}
		log.Info("cold move reverted")
		res.HookErrors = c.recoverHooks(ctx, log, r, HookRollback, errText)
		return c.Journal.Finish(ctx, r.ID, StateRolledBack, errText, map[string]any{"notes": "recovered by `ferry recover`: " + res.Note})
	}
	// Committed: the destination holds the verified VM; finish the source side.
	src, err := c.dial(ctx, HostEntry{Name: r.Source, URI: r.SourceURI})
	if err != nil {
		return fmt.Errorf("cannot finish without the source: %w", err)
	}
	defer src.Close()
	if d, err := src.LookupDomain(r.VMUUID); err == nil {
		if info, _ := d.Info(); info.State.Active() {
			return fmt.Errorf("the source copy of %s runs again: resolve by hand", r.VM)
		}
		// The NVRAM file goes (or stays) with the decision below.
		if err := d.Undefine(true); err != nil {
			return err
		}
	} else if !errors.Is(err, virt.ErrNotFound) {
		return err
	}
	srcS, err := virt.StorageOf(src)
	if err != nil {
		return err
	}
	// Who else uses the files is asked again now: the world may have
	// changed since the interrupted run looked.
	usage, err := virt.ObserveUsage(src)
	if err != nil {
		return fmt.Errorf("cannot tell what else uses the files on %s: %w", r.Source, err)
	}
	var pending []coldmove.Artifact
	for _, a := range arts {
		if a.State == coldmove.StateVerified || a.State == coldmove.StateReused {
			pending = append(pending, a)
		}
	}
	rs := coldmove.DecideRemovals(coldmove.RemovalInput{VMUUID: r.VMUUID, KeepSource: opt.KeepSource, Artifacts: pending, Usage: *usage})
	coldmove.ApplyRemovals(pending, rs)
	var paths []string
	var moved []coldmove.Artifact
	for _, a := range pending {
		if a.KeepOnSource {
			a.State = coldmove.StateKept
			_ = c.Journal.SaveArtifact(ctx, r.ID, a)
			continue
		}
		paths = append(paths, a.SrcPath)
		moved = append(moved, a)
	}
	if err := coldmove.RemoveFiles(srcS, paths); err != nil {
		return fmt.Errorf("removing the source files on %s: %w", r.Source, err)
	}
	for _, a := range moved {
		a.State = coldmove.StateMoved
		_ = c.Journal.SaveArtifact(ctx, r.ID, a)
	}
	_ = c.Journal.Release(ctx, r.ID)
	_ = c.Journal.EnterStage(ctx, r.ID, StageActivation, c.now(), nil)
	res.After, res.RunsOn = StateCompleted, r.Dest
	res.Note = fmt.Sprintf("defined on %s; source definition and %d files removed (not started)", r.Dest, len(paths))
	log.Info("cold move finished")
	res.HookErrors = c.recoverHooks(ctx, log, r, HookActivation, "")
	return c.Journal.Finish(ctx, r.ID, StateCompleted, "", map[string]any{"notes": "recovered by `ferry recover`: " + res.Note})
}
