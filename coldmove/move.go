package coldmove

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
)

// Stages a move reports to its Recorder.
const (
	StageCopying   = "copying"   // the first copy starts
	StageDefined   = "defined"   // the destination definition exists and was verified
	StageCommitted = "committed" // the source is about to be touched: no rollback from here
	StageDone      = "done"      // source removed (or kept), optional start attempted
)

// Recorder persists a move's progress so that a crash can be recovered or
// resumed. Artifact is called on every state change of an artifact; a
// failure to record "copying" stops the move, since recovery relies on it.
type Recorder interface {
	Artifact(a Artifact) error
	Stage(stage string) error
}

// ShutdownPolicy says how to stop a running VM before the move.
type ShutdownPolicy struct {
	Timeout time.Duration // wait this long for the guest to power off
	Force   bool          // then destroy it
}

// Progress is what a move reports while it runs.
type Progress struct {
	Step     string `json:"step"`
	Message  string `json:"message,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	Index    int    `json:"index"`
	Count    int    `json:"count"`
	// The current artifact: data bytes sent, position in the file, file length.
	SentBytes     int64 `json:"sent_bytes"`
	PositionBytes int64 `json:"position_bytes"`
	TotalBytes    int64 `json:"total_bytes"`
	// The whole move, the same three.
	MoveSentBytes     int64         `json:"move_sent_bytes"`
	MovePositionBytes int64         `json:"move_position_bytes"`
	MoveTotalBytes    int64         `json:"move_total_bytes"`
	Sparse            bool          `json:"sparse"`
	Elapsed           time.Duration `json:"-"`
}

// Outcome is what a move did.
type Outcome struct {
	Artifacts []Artifact `json:"artifacts"`
	Committed bool       `json:"committed"`
	Started   bool       `json:"started"`
	Shutdown  string     `json:"shutdown,omitempty"` // graceful or forced, when the VM was running
	SentBytes int64      `json:"sent_bytes"`
	Warnings  []string   `json:"warnings,omitempty"`
	DestXML   string     `json:"-"`
}

// AfterCommitError: the destination holds the verified VM, but removing the
// source (or part of it) failed; recovery finishes it.
type AfterCommitError struct{ Errs []error }

func (e *AfterCommitError) Error() string {
	var s []string
	for _, err := range e.Errs {
		s = append(s, err.Error())
	}
	return "the VM is defined on the destination, but the source was not fully removed: " + strings.Join(s, "; ")
}

func (e *AfterCommitError) Unwrap() []error { return e.Errs }

// Move is one cold move. Fill it in and call Run once.
type Move struct {
	Src, Dst               virt.Host
	SrcStorage, DstStorage Storage
	Domain                 virt.Domain // on the source
	Plan                   *Plan
	KeepSource             bool
	Start                  bool
	Shutdown               *ShutdownPolicy // nil: the VM must be shut off
	BandwidthBytesPerSec   uint64
	// Previous are the artifacts recorded by an interrupted run, by Key:
	// those verified then are checked and skipped.
	Previous map[string]Artifact
	Recorder Recorder
	Progress func(Progress)
	// OnStep observes every step (logging).
	OnStep func(StepEvent)
	// Observe reads who uses which file on the source host (virt.ObserveUsage)
	// just before the commit point; nil keeps every source file.
	Observe func() (*virt.HostUsage, error)

	watch    *watch
	sealed   SourceState
	arts     []Artifact
	sp, dp   *pools
	dstDom   virt.Domain
	out      *Outcome
	start    time.Time
	moveSent int64
	movePos  int64
	moveLen  int64
}

func (m *Move) progress(p Progress) {
	if m.Progress == nil {
		return
	}
	p.Count = len(m.arts)
	p.MoveTotalBytes, p.Sparse = m.moveLen, m.Plan.Sparse
	if p.MoveSentBytes == 0 {
		p.MoveSentBytes, p.MovePositionBytes = m.moveSent, m.movePos
	}
	p.Elapsed = time.Since(m.start)
	m.Progress(p)
}

func (m *Move) record(a *Artifact) error {
	if m.Recorder == nil {
		return nil
	}
	return m.Recorder.Artifact(*a)
}

func (m *Move) stage(s string) {
	if m.Recorder == nil {
		return
	}
	if err := m.Recorder.Stage(s); err != nil {
		m.out.Warnings = append(m.out.Warnings, fmt.Sprintf("journal: stage %s: %v", s, err))
	}
}

// Run carries out the move. Before the commit point any failure, or ctx
// ending, undoes what was done (copies removed from the destination, its
// definition removed, a VM shut down by the move started again) and
// returns a *RollbackError. After it, errors are *AfterCommitError.
func (m *Move) Run(ctx context.Context) (*Outcome, error) {
	m.start = time.Now()
	m.arts = append([]Artifact(nil), m.Plan.Artifacts...)
	m.out = &Outcome{}
	for _, a := range m.arts {
		m.moveLen += int64(a.PhysicalBytes)
	}
	m.sp, m.dp = newPools(m.SrcStorage), newPools(m.DstStorage)
	defer func() {
		if err := errors.Join(m.sp.close(), m.dp.close()); err != nil {
			m.out.Warnings = append(m.out.Warnings, "transient pools: "+err.Error())
		}
		m.out.Artifacts = m.arts
	}()

	defer m.watch.stop()

	// From the seal to the undefine the source must not change unnoticed:
	// its events are watched and its state, definition and files' stamps
	// re-checked before each step that builds on the copies.
	var steps []Step
	if m.Shutdown != nil {
		steps = append(steps, m.shutdownStep())
	}
	steps = append(steps, m.sealStep())
	for i := range m.arts {
		steps = append(steps, m.copyStep(i))
	}
	steps = append(steps, m.guardStep("before defining on the destination"), m.defineStep(), m.usageStep(),
		m.guardStep("before undefining the source"), m.commitStep(), m.undefineStep())
	observe := func(ev StepEvent) {
		if m.OnStep != nil {
			m.OnStep(ev)
		}
		switch ev.Phase {
		case "undo":
			m.progress(Progress{Step: "rollback", Message: "undo " + ev.Step})
		case "undo-failed":
			m.progress(Progress{Step: "rollback", Message: fmt.Sprintf("undo %s failed: %v", ev.Step, ev.Err)})
		}
	}
	if err := RunSteps(ctx, steps, observe); err != nil {
		m.out.Artifacts = m.arts
		return m.out, err
	}

	// Past the commit point: the destination holds verified copies and a
	// verified definition, the source definition is gone. Forward only.
	m.out.Committed = true
	if errs := m.removeSource(); len(errs) > 0 {
		return m.out, &AfterCommitError{Errs: errs}
	}
	m.stage(StageDone)
	if m.Start {
		m.progress(Progress{Step: "start", Message: "starting the VM on the destination"})
		if err := m.dstDom.Start(); err != nil {
			m.out.Warnings = append(m.out.Warnings, fmt.Sprintf("moved, but starting it on the destination failed: %v", err))
		} else {
			m.out.Started = true
		}
	}
	return m.out, nil
}

// shutdownStep stops a running VM: a guest shutdown request, then after the
// timeout a hard stop if allowed. Undo starts it again.
func (m *Move) shutdownStep() Step {
	stopped := false
	return Step{
		Name: "shutdown",
		Do: func(ctx context.Context) error {
			info, err := m.Domain.Info()
			if err != nil {
				return err
			}
			if !info.State.Active() {
				return nil
			}
			how, err := ShutdownDomain(ctx, m.Domain, *m.Shutdown, func(msg string) { m.progress(Progress{Step: "shutdown", Message: msg}) })
			if how != "" {
				stopped = true
				m.out.Shutdown = how
			}
			return err
		},
		Undo: func(context.Context) error {
			if !stopped {
				return nil
			}
			m.progress(Progress{Step: "rollback", Message: "starting the VM again on the source"})
			return m.Domain.Start()
		},
	}
}

// ShutdownDomain asks the guest to power off and waits up to the policy's
// timeout; then destroys it if Force. It returns "graceful" or "forced"
// once the VM is off.
func ShutdownDomain(ctx context.Context, d virt.Domain, p ShutdownPolicy, say func(string)) (string, error) {
	if say == nil {
		say = func(string) {}
	}
	sd, ok := d.(virt.Shutdowner)
	if ok {
		say(fmt.Sprintf("asking the guest to shut down (waiting up to %s)", p.Timeout))
		if err := sd.Shutdown(); err != nil && !p.Force {
			return "", err
		}
		deadline := time.Now().Add(p.Timeout)
		for time.Now().Before(deadline) {
			info, err := d.Info()
			if err == nil && !info.State.Active() {
				return "graceful", nil
			}
			select {
			case <-ctx.Done():
				return "", context.Cause(ctx)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	if !p.Force {
		return "", fmt.Errorf("the guest did not shut down within %s (add --force to stop it hard after the timeout)", p.Timeout)
	}
	say("the guest did not shut down in time: destroying it (--force)")
	if err := d.Destroy(); err != nil {
		if info, ierr := d.Info(); ierr != nil || info.State.Active() {
			return "", err
		}
	}
	return "forced", nil
}

func (m *Move) copyStep(i int) Step {
	a := &m.arts[i]
	return Step{
		Name: "copy " + a.Name(),
		Do:   func(ctx context.Context) error { return m.copyArtifact(ctx, a) },
		Undo: func(context.Context) error { return m.removeCopy(a) },
		// A failed copy may leave a partial volume: remove it like a done one.
		UndoOnFailure: true,
	}
}

func (m *Move) copyArtifact(ctx context.Context, a *Artifact) error {
	t0 := time.Now()
	base := filepath.Base(a.DstPath)
	label := fmt.Sprintf("%s -> %s", a.SrcPath, a.DstPath)
	if a.Index == 0 {
		m.stage(StageCopying)
	}
	dstPool, err := m.dp.dir(filepath.Dir(a.DstPath), true)
	if err != nil {
		return err
	}
	srcVol, err := m.sp.volumeAt(a.SrcPath, false)
	if err != nil {
		return err
	}
	prev, hadPrev := m.Previous[a.Key()]
	ours := hadPrev && prev.DstPath == a.DstPath
	existing, lerr := dstPool.LookupVolume(base)
	if lerr != nil && !errors.Is(lerr, virt.ErrNotFound) {
		return lerr
	}
	if existing != nil {
		switch {
		case ours && prev.State == StateVerified && prev.Checksum != "" && prev.SourceStamp != "" && prev.SourceStamp == a.SourceStamp:
			if vi, err := existing.Info(); err == nil && vi.PhysicalBytes == a.PhysicalBytes {
				a.Skipped, a.Checksum, a.SentBytes, a.Sparse, a.State = true, prev.Checksum, 0, prev.Sparse, StateVerified
				m.movePos += int64(a.PhysicalBytes)
				m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, PositionBytes: int64(a.PhysicalBytes), TotalBytes: int64(a.PhysicalBytes),
					Message: fmt.Sprintf("%s: already copied and verified by the interrupted run (%s), skipped", a.Name(), short(prev.Checksum))})
				return m.record(a)
			}
			fallthrough
		case ours:
			// A partial copy of the interrupted run: start it over.
			if err := existing.Delete(); err != nil {
				return err
			}
		case a.Kind == KindBacking:
			srcSum, _, err := Checksum(ctx, srcVol, m.Plan.Sparse)
			if err != nil {
				return err
			}
			dstSum, _, err := Checksum(ctx, existing, m.Plan.Sparse)
			if err != nil {
				return err
			}
			if srcSum != dstSum {
				return fmt.Errorf("backing file %s exists on the destination with other contents", a.DstPath)
			}
			a.State, a.Checksum = StateReused, srcSum
			m.movePos += int64(a.PhysicalBytes)
			m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, Message: fmt.Sprintf("%s: identical copy already on the destination, reused", a.Name())})
			return m.record(a)
		default:
			return fmt.Errorf("the destination already has %s", a.DstPath)
		}
	}
	a.State = StateCopying
	if err := m.record(a); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, TotalBytes: int64(a.PhysicalBytes), Message: "copying " + a.Name() + ": " + label})
	dstVol, err := dstPool.CreateVolume(libvirtxml.StorageVolume{
		Name:       base,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: a.PhysicalBytes},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	})
	if err != nil {
		return err
	}
	baseSent, basePos := m.moveSent, m.movePos
	sum, stats, err := CopyVolume(ctx, srcVol, dstVol, CopyOptions{Sparse: m.Plan.Sparse, BandwidthBytesPerSec: m.BandwidthBytesPerSec,
		Progress: func(sent, pos int64) {
			m.moveSent, m.movePos = baseSent+sent, basePos+pos
			m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, SentBytes: sent, PositionBytes: pos, TotalBytes: int64(a.PhysicalBytes)})
		}})
	a.SentBytes, a.Sparse = stats.DataBytes, stats.Sparse
	m.out.SentBytes += stats.DataBytes
	if err != nil {
		return err // the step's undo removes the partial copy
	}
	_ = dstPool.Refresh()
	check, err := dstPool.LookupVolume(base)
	if err != nil {
		return fmt.Errorf("the copy %s vanished: %w", a.DstPath, err)
	}
	m.progress(Progress{Step: "verify", Artifact: a.Name(), Index: a.Index, Message: "verifying " + a.Name() + " on the destination"})
	if err := verifyCopy(ctx, check, sum, stats.DataBytes+stats.HoleBytes, m.Plan.Sparse); err != nil {
		return fmt.Errorf("%s: %w", a.DstPath, err)
	}
	a.Checksum, a.State, a.DurationMS = sum, StateVerified, time.Since(t0).Milliseconds()
	m.movePos = basePos + int64(a.PhysicalBytes)
	how := "sparse"
	if !stats.Sparse {
		how = "dense"
	}
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, SentBytes: stats.DataBytes, PositionBytes: int64(a.PhysicalBytes), TotalBytes: int64(a.PhysicalBytes),
		Message: fmt.Sprintf("%s: %s sent (%s), verified on the destination %s", a.Name(), HumanBytes(uint64(stats.DataBytes)), how, short(sum))})
	return m.record(a)
}

func short(sum string) string {
	s := strings.TrimPrefix(sum, DigestPrefix)
	if len(s) > 12 {
		s = s[:12]
	}
	return DigestPrefix + s
}

// removeCopy deletes the destination's copy of an artifact (rollback).
func (m *Move) removeCopy(a *Artifact) error {
	if a.State != StateVerified && a.State != StateCopying {
		return nil // reused, or never made
	}
	if err := removeFile(m.dp, a.DstPath); err != nil {
		return err
	}
	a.State = StateRemoved
	return m.record(a)
}

// removeFile deletes a file through the pool over its directory; a file
// that is already gone is fine.
func removeFile(p *pools, path string) error {
	pl, err := p.dir(filepath.Dir(path), false)
	if err != nil {
		return err
	}
	v, err := pl.LookupVolume(filepath.Base(path))
	if errors.Is(err, virt.ErrNotFound) {
		if rerr := pl.Refresh(); rerr != nil {
			return rerr
		}
		v, err = pl.LookupVolume(filepath.Base(path))
	}
	if errors.Is(err, virt.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return v.Delete()
}

// RemoveFiles deletes files on a host through pools over their
// directories (for recovery). Missing files are fine.
func RemoveFiles(s Storage, paths []string) error {
	p := newPools(s)
	var errs []error
	for _, path := range paths {
		if err := removeFile(p, path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	errs = append(errs, p.close())
	return errors.Join(errs...)
}

func (m *Move) defineStep() Step {
	return Step{
		Name: "define on the destination",
		Do: func(ctx context.Context) error {
			// The definition sealed before the copy (the guard just saw it unchanged).
			dstXML, err := Rewrite(m.sealed.XML, MappingOf(m.Plan))
			if err != nil {
				return err
			}
			if d, err := m.Dst.LookupDomain(m.Plan.UUID); err == nil {
				info, _ := d.Info()
				return fmt.Errorf("the destination already has a domain with UUID %s (%s)", m.Plan.UUID, info.Name)
			}
			dom, err := m.Dst.DefineXML(dstXML)
			if err != nil {
				return err
			}
			m.dstDom = dom
			m.out.DestXML = dstXML
			if err := VerifyDefinition(dom, m.Plan); err != nil {
				return fmt.Errorf("verify the destination definition: %w", err)
			}
			m.stage(StageDefined)
			m.progress(Progress{Step: "define", Message: "defined on the destination and verified"})
			return nil
		},
		Undo: func(context.Context) error {
			if m.dstDom == nil {
				return nil
			}
			return m.dstDom.Undefine(true) // its NVRAM is removed by the copy's undo
		},
	}
}

// VerifyDefinition checks that the destination's definition is the VM, shut
// off and persistent, with its disks and NVRAM at the copies' paths.
func VerifyDefinition(dom virt.Domain, p *Plan) error {
	info, err := dom.Info()
	if err != nil {
		return err
	}
	if info.UUID != p.UUID || info.Name != p.VM {
		return fmt.Errorf("defined %s (%s), expected %s (%s)", info.Name, info.UUID, p.VM, p.UUID)
	}
	if !info.Persistent || info.State.Active() {
		return fmt.Errorf("the destination copy is %s (persistent %v), expected a persistent shut-off definition", info.State, info.Persistent)
	}
	x, err := dom.XML(false)
	if err != nil {
		return err
	}
	spec, err := virt.ParseSpec(x)
	if err != nil {
		return err
	}
	byTarget := map[string]string{}
	for _, d := range spec.Disks {
		byTarget[d.Target] = d.Source
	}
	for _, a := range p.Artifacts {
		switch a.Kind {
		case KindDisk:
			if got, ok := byTarget[a.Target]; ok && got != "" && got != a.DstPath {
				return fmt.Errorf("disk %s points at %s, expected %s", a.Target, got, a.DstPath)
			}
		case KindNVRAM:
			if spec.NVRAM != "" && spec.NVRAM != a.DstPath {
				return fmt.Errorf("NVRAM points at %s, expected %s", spec.NVRAM, a.DstPath)
			}
		}
	}
	return nil
}

// usageStep decides which source files may be deleted after the commit
// point (DecideRemovals over virt.ObserveUsage) and journals each decision
// before anything is deleted.
func (m *Move) usageStep() Step {
	return Step{
		Name: "check who else uses the source files",
		Do: func(ctx context.Context) error {
			u := &virt.HostUsage{Unresolved: []string{"(the source host's domains and volumes were not observed)"}}
			if m.Observe != nil {
				var err error
				if u, err = m.Observe(); err != nil {
					return fmt.Errorf("cannot tell what else uses the VM's files on the source: %w", err)
				}
			}
			rs := DecideRemovals(RemovalInput{VMUUID: m.Plan.UUID, KeepSource: m.KeepSource, Artifacts: m.arts, Usage: *u})
			ApplyRemovals(m.arts, rs)
			for i := range m.arts {
				a := &m.arts[i]
				if err := m.record(a); err != nil {
					return fmt.Errorf("journal: %w", err)
				}
				if a.KeepReason != "" && !m.KeepSource {
					m.progress(Progress{Step: "check", Message: fmt.Sprintf("%s stays on the source: %s", a.SrcPath, a.KeepReason)})
				}
			}
			return nil
		},
	}
}

// commitStep journals the commit point; without that row nothing on the
// source is touched.
func (m *Move) commitStep() Step {
	return Step{
		Name: "journal the commit point",
		Do: func(ctx context.Context) error {
			if m.Recorder == nil {
				return nil
			}
			if err := m.Recorder.Stage(StageCommitted); err != nil {
				return fmt.Errorf("journal: %w", err)
			}
			return nil
		},
	}
}

// undefineStep removes the source definition (NVRAM left to the removal
// decision) and checks the domain is gone: one started between the last
// check and the undefine would live on as a transient domain over files
// about to be deleted. Undo defines it again from the sealed definition.
func (m *Move) undefineStep() Step {
	return Step{
		Name: "undefine the source",
		Do: func(ctx context.Context) error {
			m.progress(Progress{Step: "cleanup", Message: "undefining the VM on the source"})
			if err := m.Domain.Undefine(true); err != nil && !errors.Is(err, virt.ErrNotFound) {
				return fmt.Errorf("undefine the source: %w", err)
			}
			d, err := m.Src.LookupDomain(m.Plan.UUID)
			if errors.Is(err, virt.ErrNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("checking the source after the undefine: %w", err)
			}
			info, _ := d.Info()
			return &SourceChangedError{When: "after undefining the source", Changes: []string{
				fmt.Sprintf("the source still has %s (%s, persistent %v): it was started or defined again right after the last check", info.Name, info.State, info.Persistent)}}
		},
		Undo: func(context.Context) error {
			if d, err := m.Src.LookupDomain(m.Plan.UUID); err == nil {
				if info, err := d.Info(); err == nil && info.Persistent {
					return nil
				}
			} else if !errors.Is(err, virt.ErrNotFound) {
				return err
			}
			m.progress(Progress{Step: "rollback", Message: "defining the VM on the source again"})
			_, err := m.Src.DefineXML(m.sealed.XML)
			return err
		},
		UndoOnFailure: true,
	}
}

// removeSource deletes the source files DecideRemovals let go (none with
// KeepSource); the definition is already gone.
func (m *Move) removeSource() []error {
	var errs []error
	kept := 0
	for i := range m.arts {
		a := &m.arts[i]
		if a.State != StateVerified && a.State != StateReused {
			continue
		}
		if m.KeepSource || a.KeepOnSource {
			a.State = StateKept
			kept++
			_ = m.record(a)
			continue
		}
		if err := removeFile(m.sp, a.SrcPath); err != nil {
			errs = append(errs, fmt.Errorf("remove %s on the source: %w", a.SrcPath, err))
			continue
		}
		a.State = StateMoved
		_ = m.record(a)
	}
	if len(errs) == 0 {
		msg := "source definition and files removed"
		if kept > 0 {
			msg = fmt.Sprintf("source definition removed; %d files kept on the source", kept)
		}
		m.progress(Progress{Step: "cleanup", Message: msg})
	}
	return errs
}
