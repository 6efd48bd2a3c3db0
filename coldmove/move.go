package coldmove

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	Step string `json:"step"`
	// Message is shown as the move's own message (orchestrator.Progress),
	// not repeated among these figures.
	Message  string `json:"-"`
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
