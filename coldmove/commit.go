package coldmove

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferryvm/ferry/virt"
)

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
