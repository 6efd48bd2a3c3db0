package coldmove

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/ferryvm/ferry/virt"
)

// ErrSourceChanged: the source VM was started, redefined, or one of its
// files changed while it was being copied; the copies are stale.
var ErrSourceChanged = errors.New("the source changed during the copy")

// SourceChangedError lists what changed, and at which check it was seen.
type SourceChangedError struct {
	When    string
	Changes []string
}

func (e *SourceChangedError) Error() string {
	return fmt.Sprintf("%s (seen %s): %s; the copies are stale", ErrSourceChanged, e.When, strings.Join(e.Changes, "; "))
}

func (e *SourceChangedError) Unwrap() error { return ErrSourceChanged }

// StampOf is a file's identity for change detection: length, allocation
// and libvirt's mtime and ctime (nanoseconds). Any write moves ctime, which
// no user can set back, so an equal stamp means an unchanged file.
func StampOf(v virt.VolumeInfo) string {
	return fmt.Sprintf("len=%d alloc=%d mtime=%s ctime=%s", v.PhysicalBytes, v.AllocatedBytes, v.Mtime, v.Ctime)
}

// SourceState is what the guard compares: the domain's state and
// definition, each artifact's stamp (by source path; "" when the file is
// gone), and the domain events seen since the seal.
type SourceState struct {
	Active     bool
	State      string
	Persistent bool
	XML        string
	Stamps     map[string]string
	Events     []string
}

// SourceChanges compares the sealed state with the current one and says
// what changed; none means the copies still match the source.
func SourceChanges(sealed, now SourceState) []string {
	var out []string
	out = append(out, now.Events...)
	if now.Active {
		out = append(out, fmt.Sprintf("the VM is %s on the source", now.State))
	}
	if sealed.Persistent && !now.Persistent {
		out = append(out, "the VM's persistent definition is gone from the source")
	}
	if now.XML != sealed.XML {
		out = append(out, "the VM's definition on the source changed")
	}
	var paths []string
	for p := range sealed.Stamps {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		was, is := sealed.Stamps[p], now.Stamps[p]
		switch {
		case is == "":
			out = append(out, p+" is gone from the source")
		case is != was:
			out = append(out, fmt.Sprintf("%s changed on the source (was %s, now %s)", p, was, is))
		}
	}
	return out
}

// watch collects the source domain's events from the seal to the commit
// point: a start and shutdown between two checks leaves the state as it
// was, but not the event stream.
type watch struct {
	mu     sync.Mutex
	events []string
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatch(h virt.Host, uuid string) (*watch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := h.Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch the source's domain events: %w", err)
	}
	w := &watch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ev := range ch {
			var what string
			switch {
			case ev.Kind == virt.EventClosed:
				what = "the connection to the source closed (" + ev.Reason + "): its events may be lost"
			case ev.Kind == virt.EventLifecycle && ev.UUID == uuid:
				what = fmt.Sprintf("the VM was %s", ev.Lifecycle)
				if ev.Detail != "" {
					what += " (" + ev.Detail + ")"
				}
				what += " on the source at " + ev.At.Format("15:04:05.000")
			default:
				continue
			}
			w.mu.Lock()
			w.events = append(w.events, what)
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *watch) seen() []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

func (w *watch) stop() {
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
}

// observeSource reads the source's current state for the guard.
func (m *Move) observeSource() (SourceState, error) {
	info, err := m.Domain.Info()
	if err != nil {
		return SourceState{}, err
	}
	x, err := m.Domain.XML(false)
	if err != nil {
		return SourceState{}, err
	}
	st := SourceState{Active: info.State.Active(), State: string(info.State), Persistent: info.Persistent, XML: x,
		Stamps: map[string]string{}, Events: m.watch.seen()}
	for _, a := range m.arts {
		v, err := m.sp.volumeAt(a.SrcPath, false)
		if errors.Is(err, virt.ErrNotFound) {
			st.Stamps[a.SrcPath] = ""
			continue
		}
		if err != nil {
			return SourceState{}, err
		}
		vi, err := v.Info()
		if err != nil {
			return SourceState{}, err
		}
		st.Stamps[a.SrcPath] = StampOf(vi)
	}
	return st, nil
}

// sealStep starts watching the source's events and records its state and
// every file's stamp before the first byte is copied.
func (m *Move) sealStep() Step {
	return Step{
		Name: "seal the source",
		Do: func(ctx context.Context) error {
			w, err := startWatch(m.Src, m.Plan.UUID)
			if err != nil {
				return err
			}
			m.watch = w
			st, err := m.observeSource()
			if err != nil {
				return err
			}
			if st.Active {
				return &SourceChangedError{When: "before the copy", Changes: []string{fmt.Sprintf("the VM is %s on the source", st.State)}}
			}
			if len(st.Events) > 0 {
				return &SourceChangedError{When: "before the copy", Changes: st.Events}
			}
			m.sealed = st
			for i := range m.arts {
				a := &m.arts[i]
				a.SourceStamp = st.Stamps[a.SrcPath]
				if err := m.record(a); err != nil {
					return fmt.Errorf("journal: %w", err)
				}
			}
			return nil
		},
	}
}

// guardStep re-checks the source against the seal; a change rolls the
// move back.
func (m *Move) guardStep(when string) Step {
	return Step{
		Name: "check the source " + when,
		Do: func(ctx context.Context) error {
			st, err := m.observeSource()
			if err != nil {
				return fmt.Errorf("re-reading the source %s: %w", when, err)
			}
			if ch := SourceChanges(m.sealed, st); len(ch) > 0 {
				return &SourceChangedError{When: when, Changes: ch}
			}
			m.progress(Progress{Step: "check", Message: "source unchanged since the copy began (state, definition, " + fmt.Sprint(len(st.Stamps)) + " files, events) " + when})
			return nil
		},
	}
}
