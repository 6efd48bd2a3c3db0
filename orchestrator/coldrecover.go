package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// Recovering a cold move: observe the hosts the interrupted stage depends
// on, decide with the pure decideCold (table-tested), then apply. Before the
// commit point the move is reverted (the destination's copies and
// definition removed; the source was never touched), after it finished (the
// source's definition and the files nothing else uses removed).

// coldOptions is what recover needs from a cold row's options.
type coldOptions struct {
	KeepSource bool `json:"keep_source"`
	Shutdown   bool `json:"shutdown"`
}

// coldSeen is what recover saw of one host for a cold move.
type coldSeen struct {
	Reached bool  // the host answered
	Err     error // why not
	Defined bool  // it defines the VM
	Active  bool  // and runs it
}

// coldWorld is what decideCold decides from.
type coldWorld struct {
	Planned   bool // the row got past its pre-flight (VM, destination, reservation known)
	Committed bool // it reached the commit point
	Src, Dst  coldSeen
}

// coldVerdict is what recover does with an interrupted cold move.
type coldVerdict int

const (
	coldNothingDone coldVerdict = iota // interrupted in the pre-flight
	coldRevert                         // remove the destination's copies (and definition)
	coldFinish                         // remove the source's definition and files
	coldWait                           // a host it needs does not answer
	coldByHand                         // the world contradicts the journal
)

type coldDecision struct {
	Do          coldVerdict
	UndefineDst bool   // coldRevert: the destination's definition is ours to remove
	UndefineSrc bool   // coldFinish: the source still defines the VM
	Why         string // coldWait, coldByHand
}

// decideCold decides from the journal's stage and the hosts' answers.
func decideCold(w coldWorld) coldDecision {
	switch {
	case !w.Planned:
		return coldDecision{Do: coldNothingDone}
	case !w.Committed && !w.Dst.Reached:
		return coldDecision{Do: coldWait, Why: fmt.Sprintf("cannot remove the copies without the destination: %v", w.Dst.Err)}
	case !w.Committed && !w.Dst.Defined:
		return coldDecision{Do: coldRevert}
	case !w.Committed && !w.Src.Reached:
		return coldDecision{Do: coldWait, Why: fmt.Sprintf("cannot decide about the destination's definition without the source: %v", w.Src.Err)}
	case !w.Committed && !w.Src.Defined:
		return coldDecision{Do: coldByHand, Why: "the source no longer has the VM although the move had not committed: resolve by hand"}
	case !w.Committed && w.Dst.Active:
		return coldDecision{Do: coldByHand, Why: "the destination's copy is running although the move had not committed: resolve by hand"}
	case !w.Committed:
		// Ours only while the source still holds the VM (before the commit
		// point it always does).
		return coldDecision{Do: coldRevert, UndefineDst: true}
	case !w.Src.Reached:
		return coldDecision{Do: coldWait, Why: fmt.Sprintf("cannot finish without the source: %v", w.Src.Err)}
	case w.Src.Active:
		return coldDecision{Do: coldByHand, Why: "the source copy runs again: resolve by hand"}
	}
	return coldDecision{Do: coldFinish, UndefineSrc: w.Src.Defined}
}

// coldHosts are the connections recover opened for a cold move.
type coldHosts struct {
	src, dst         virt.Host
	srcDom, dstDom   virt.Domain
	srcName, dstName string
}

func (h *coldHosts) close() {
	for _, c := range []virt.Host{h.src, h.dst} {
		if c != nil {
			c.Close()
		}
	}
}

// see dials a host and looks the VM up there.
func (c *Controller) see(ctx context.Context, name, uri, uuid string) (virt.Host, virt.Domain, coldSeen) {
	conn, err := c.dial(ctx, inventory.Host{Name: name, URI: uri})
	if err != nil {
		return nil, nil, coldSeen{Err: err}
	}
	d, err := conn.LookupDomain(uuid)
	switch {
	case errors.Is(err, virt.ErrNotFound):
		return conn, nil, coldSeen{Reached: true}
	case err != nil:
		return conn, nil, coldSeen{Err: err}
	}
	info, _ := d.Info()
	return conn, d, coldSeen{Reached: true, Defined: true, Active: info.State.Active()}
}

// observeCold looks at the hosts the row's stage depends on: the
// destination (and, if it defines the VM, the source) before the commit
// point, the source after it.
func (c *Controller) observeCold(ctx context.Context, r *journal.Record) (coldWorld, *coldHosts) {
	w := coldWorld{Planned: r.VMUUID != "" && r.DestURI != "" && r.Stage >= journal.StageReservation, Committed: r.Stage >= journal.StageCommitment}
	h := &coldHosts{srcName: r.Source, dstName: r.Dest}
	if !w.Planned {
		return w, h
	}
	if !w.Committed {
		h.dst, h.dstDom, w.Dst = c.see(ctx, r.Dest, r.DestURI, r.VMUUID)
		if !w.Dst.Defined {
			return w, h
		}
	}
	h.src, h.srcDom, w.Src = c.see(ctx, r.Source, r.SourceURI, r.VMUUID)
	return w, h
}

// recoverCold reverts or finishes an interrupted cold move.
func (c *Controller) recoverCold(ctx context.Context, r *journal.Record, res *RecoverResult) error {
	log := c.log().WithFields(logrus.Fields{"migration": r.ID, "vm": r.VM, "kind": KindCold})
	w, h := c.observeCold(ctx, r)
	defer h.close()
	d := decideCold(w)
	log.WithFields(logrus.Fields{"decision": d.Do, "why": d.Why}).Info("recovering a cold move")
	switch d.Do {
	case coldNothingDone:
		if err := c.Journal.Release(ctx, r.ID); err != nil {
			return err
		}
		res.After = journal.StateRefused
		return c.Journal.Finish(ctx, r.ID, journal.StateRefused, "interrupted during pre-flight checks; nothing was changed", map[string]any{"notes": "recovered"})
	case coldWait:
		who := "source " + r.Source
		if !w.Committed && !w.Dst.Reached {
			who = "destination " + r.Dest
		}
		res.WaitingFor = who + " to answer"
		return fmt.Errorf("%w: %s", ErrNeedsRecovery, d.Why)
	case coldByHand:
		return fmt.Errorf("%w: VM %s: %s", ErrNeedsRecovery, r.VM, d.Why)
	}
	arts, err := c.Journal.Artifacts(ctx, r.ID)
	if err != nil {
		return err
	}
	var opt coldOptions
	_ = json.Unmarshal([]byte(r.Options), &opt)
	if d.Do == coldRevert {
		return c.revertCold(ctx, log, r, h, d, arts, opt, res)
	}
	return c.finishCold(ctx, log, r, h, d, arts, opt, res)
}

// revertCold removes what an uncommitted cold move put on the destination.
func (c *Controller) revertCold(ctx context.Context, log *logrus.Entry, r *journal.Record, h *coldHosts, d coldDecision, arts []coldmove.Artifact, opt coldOptions, res *RecoverResult) error {
	if d.UndefineDst {
		if err := h.dstDom.Undefine(true); err != nil {
			return err
		}
	}
	dstS, err := virt.StorageOf(h.dst)
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
	if err := c.saveArtifacts(ctx, r.ID, touched, coldmove.StateRemoved); err != nil {
		return err
	}
	if err := c.Journal.Release(ctx, r.ID); err != nil {
		return err
	}
	res.After, res.RunsOn = journal.StateRolledBack, r.Source
	res.Note = fmt.Sprintf("%d copies removed from %s; the source was not touched", len(paths), r.Dest)
	if opt.Shutdown {
		res.Note += " (a VM ferry had shut down for the move stays shut off)"
	}
	errText := r.Error
	if errText == "" {
		errText = "interrupted (ferry stopped during the cold move); reverted by recover"
	}
	log.Info("cold move reverted")
	res.HookErrors = c.recoverHooks(ctx, log, r, hooks.Rollback, errText)
	return c.Journal.Finish(ctx, r.ID, journal.StateRolledBack, errText, map[string]any{"notes": "recovered by `ferry recover`: " + res.Note})
}

// finishCold removes the source side of a committed cold move: its
// definition (with its NVRAM) and the files nothing else uses, asked again
// now since the world may have changed since the interrupted run looked.
func (c *Controller) finishCold(ctx context.Context, log *logrus.Entry, r *journal.Record, h *coldHosts, d coldDecision, arts []coldmove.Artifact, opt coldOptions, res *RecoverResult) error {
	if d.UndefineSrc {
		if err := h.srcDom.Undefine(true); err != nil {
			return err
		}
	}
	srcS, err := virt.StorageOf(h.src)
	if err != nil {
		return err
	}
	usage, err := virt.ObserveUsage(h.src)
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
	var moved, kept []coldmove.Artifact
	for _, a := range pending {
		if a.KeepOnSource {
			kept = append(kept, a)
			continue
		}
		paths = append(paths, a.SrcPath)
		moved = append(moved, a)
	}
	if err := c.saveArtifacts(ctx, r.ID, kept, coldmove.StateKept); err != nil {
		return err
	}
	if err := coldmove.RemoveFiles(srcS, paths); err != nil {
		return fmt.Errorf("removing the source files on %s: %w", r.Source, err)
	}
	if err := c.saveArtifacts(ctx, r.ID, moved, coldmove.StateMoved); err != nil {
		return err
	}
	if err := c.Journal.Release(ctx, r.ID); err != nil {
		return err
	}
	if err := c.Journal.EnterStage(ctx, r.ID, journal.StageActivation, c.now(), nil); err != nil {
		return err
	}
	res.After, res.RunsOn = journal.StateCompleted, r.Dest
	res.Note = fmt.Sprintf("defined on %s; source definition and %d files removed (not started)", r.Dest, len(paths))
	log.Info("cold move finished")
	res.HookErrors = c.recoverHooks(ctx, log, r, hooks.Activation, "")
	return c.Journal.Finish(ctx, r.ID, journal.StateCompleted, "", map[string]any{"notes": "recovered by `ferry recover`: " + res.Note})
}

// saveArtifacts records a new state for each of arts.
func (c *Controller) saveArtifacts(ctx context.Context, id string, arts []coldmove.Artifact, state string) error {
	for _, a := range arts {
		a.State = state
		if err := c.Journal.SaveArtifact(ctx, id, a); err != nil {
			return err
		}
	}
	return nil
}
