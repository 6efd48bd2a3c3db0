package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// Post-copy survives a broken link: once post-copy started, the destination
// runs the guest and the source holds the pages not yet sent, so rolling back
// is impossible and giving up hangs the guest on both hosts. When the
// migration stream breaks, QEMU pauses both sides (postcopy-paused); ferry
// reconnects them (virt/postcopy.go explains why through the source's monitor
// and not libvirt's --postcopy-resume, which crashes libvirtd 11.3), retrying
// with backoff within a window, then leaves the job to `ferry recover`, which
// resumes it the same way. A dead destination QEMU cannot be resumed: the
// guest's state there is lost.

// ErrPostcopyPaused: a post-copy migration is paused (its stream broke) and
// was not resumed within the retry window; `ferry recover` resumes it.
var ErrPostcopyPaused = errors.New("post-copy migration paused")

// errNotResumable: the post-copy cannot be resumed (the destination QEMU is
// gone, or QEMU reports another failure); convergence decides what is left.
var errNotResumable = errors.New("post-copy cannot be resumed")

// DefaultPostcopyResumeWindow is how long ferry keeps resuming a paused
// post-copy before it leaves it to `ferry recover`: the guest is frozen
// meanwhile, so this bounds the outage a flapping link costs unattended.
const DefaultPostcopyResumeWindow = 2 * time.Minute

// ResumePolicy is the retry schedule of post-copy resumes.
type ResumePolicy struct {
	Window  time.Duration // from the first pause; 0: DefaultPostcopyResumeWindow
	Initial time.Duration // wait before the second attempt (the first is at once); 0: 500 ms
	Max     time.Duration // backoff cap; 0: 8 s
}

func (p ResumePolicy) withDefaults() ResumePolicy {
	if p.Window <= 0 {
		p.Window = DefaultPostcopyResumeWindow
	}
	if p.Initial <= 0 {
		p.Initial = 500 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 8 * time.Second
	}
	return p
}

// nextResume is the retry schedule, a pure function: after `attempts`
// resumes, `paused` after the first pause, how long to wait before the next
// one, or false once the window is over. The first attempt is immediate,
// then the wait doubles from Initial up to Max; the last attempt falls on the
// window's end.
func nextResume(p ResumePolicy, attempts int, paused time.Duration) (time.Duration, bool) {
	p = p.withDefaults()
	if paused >= p.Window {
		return 0, false
	}
	if attempts <= 0 {
		return 0, true
	}
	d := p.Max
	if attempts-1 < 16 && p.Initial<<(attempts-1) < p.Max {
		d = p.Initial << (attempts - 1)
	}
	if paused+d > p.Window {
		d = p.Window - paused
	}
	return d, true
}

// The incoming port ferry picks for post-copy moves: from the top of libvirt's
// default migration range (49152-49215), which its own allocator fills from the
// bottom, so hosts' firewalls need nothing new.
const (
	postcopyPortMin = 49152
	postcopyPortMax = 49215
)

// pickPostcopyPort returns the highest port of the range not in used.
func pickPostcopyPort(used map[int]bool) (int, bool) {
	for p := postcopyPortMax; p >= postcopyPortMin; p-- {
		if !used[p] {
			return p, true
		}
	}
	return 0, false
}

// postcopyDataURI is the data URI with an explicit port: the destination
// QEMU keeps listening there after a break, and ferry must know where to
// reconnect (neither libvirt nor the source QEMU tells).
func postcopyDataURI(dst inventory.Host, port int) string {
	host := dst.MigrationAddress
	if host == "" {
		host = virt.URIHost(dst.URI)
	}
	if host == "" {
		return ""
	}
	return "tcp://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// optionsDataURI reads the post-copy data URI kept in a row's options.
func optionsDataURI(options string) string {
	var o struct {
		URI string `json:"postcopy_data_uri"`
	}
	_ = json.Unmarshal([]byte(options), &o)
	return o.URI
}

func uriPort(uri string) int {
	u, err := url.Parse(uri)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// setupPostcopy picks the incoming port of a move that may switch to
// post-copy and records it in the journal's options (recover needs it).
func (m *move) setupPostcopy(ctx context.Context, w *watch) {
	if !w.job.Postcopy {
		return
	}
	used := map[int]bool{}
	for _, st := range []string{journal.StateRunning, journal.StateFailed} {
		rows, err := m.c.Journal.List(ctx, journal.ListFilter{State: st})
		if err != nil {
			m.log.WithError(err).Warn("journal: cannot list moves for the post-copy port")
			continue
		}
		for _, r := range rows {
			if r.ID != m.rec.ID && r.DestURI == m.dst.URI {
				if p := uriPort(optionsDataURI(r.Options)); p > 0 {
					used[p] = true
				}
			}
		}
	}
	port, ok := pickPostcopyPort(used)
	uri := ""
	if ok {
		uri = postcopyDataURI(m.dst, port)
	}
	if uri == "" {
		m.log.Warn("no post-copy data port: a broken post-copy stream could not be resumed")
		return
	}
	w.dataURI = uri
	opts := map[string]any{}
	_ = json.Unmarshal([]byte(m.rec.Options), &opts)
	opts["postcopy_data_uri"] = uri
	b, _ := json.Marshal(opts)
	m.rec.Options = string(b)
	if err := m.c.Journal.Update(ctx, m.rec.ID, map[string]any{"options": m.rec.Options}); err != nil {
		m.log.WithError(err).Error("journal")
	}
}

// postcopyDomain is what resuming needs of the source domain (virt's libvirt
// domain has it; fakes may not).
type postcopyDomain interface {
	MigrationStatus() (virt.MigrationStatus, error)
	ResumePostcopy(dataURI string) error
}

// resumeLog collects what happened for the journal's notes.
type resumeLog struct {
	pausedAt time.Time
	attempts int
	pauses   int
	paused   time.Duration // total time QEMU reported postcopy-paused
	lines    []string
}

func (l *resumeLog) String() string { return strings.Join(l.lines, "; ") }

// detail is the SLA completed event's detail: the pause, not a failure.
func (l *resumeLog) detail() string {
	if l == nil || l.pauses == 0 {
		return ""
	}
	return fmt.Sprintf("post-copy paused %d time(s) for %.1f s in all (migration stream broke); resumed after %d attempt(s)",
		l.pauses, l.paused.Seconds(), l.attempts)
}

// Polling of the resume loop.
const (
	resumePollInterval = 250 * time.Millisecond
	// resumeStallLimit: a reconnected post-copy that moves no byte for this
	// long is treated as paused (left for recover) rather than waited on forever.
	resumeStallLimit = 2 * time.Minute
	// finishWait bounds how long libvirt may take to finish the unattended
	// job once QEMU reports completion.
	finishWait = time.Minute
	// handshakeLimit: a reconnection still in its handshake
	// (postcopy-recover-setup or postcopy-recover) after this is hung: the
	// handshake exchanges one bitmap, well under a second here.
	handshakeLimit = 5 * time.Second
	// qmpErrorLimit: how long query-migrate may keep failing. libvirt refuses
	// the monitor for a moment while it shuts the source off after
	// completion; a source QEMU whose main loop is stuck (a TLS handshake
	// the destination never answers) makes every call wait out libvirt's
	// 30 s job lock, so this is time, not a count of polls.
	qmpErrorLimit = 90 * time.Second
)

// resumeLoop drives a broken post-copy to completion: it returns nil once QEMU
// completed and the source's libvirt shut the source copy off, ErrPostcopyPaused
// when the window lapsed, errNotResumable when resuming cannot help. record is
// called after every change worth a journal line. Each poll observes the
// source, lets the pure resumeTracker.step decide, then applies its verdict.
func (c *Controller) resumeLoop(ctx context.Context, log *logrus.Entry, src, dst virt.Host, uuid, dataURI string, pol ResumePolicy, rl *resumeLog, record func()) error {
	t := newResumeTracker(pol, c.now())
	note := func(line string) {
		rl.lines = append(rl.lines, line)
		log.Info(line)
		record()
	}
	for {
		now := c.now()
		sd, err := src.LookupDomain(uuid)
		if errors.Is(err, virt.ErrNotFound) {
			t.finish(rl, now)
			return nil // libvirt finished and the source was transient
		}
		if err != nil {
			return fmt.Errorf("%w: source: %w", ErrUnreachable, err)
		}
		info, err := sd.Info()
		if err != nil {
			return fmt.Errorf("%w: source: %w", ErrUnreachable, err)
		}
		if !info.State.Active() {
			t.finish(rl, now)
			return nil
		}
		// A dead destination QEMU holds nothing to resume into.
		do, _, derr := observe(dst, uuid)
		if derr == nil && !do.live() {
			return fmt.Errorf("%w: the destination has no running copy (%s): the guest state there is lost", errNotResumable, do)
		}
		pd, ok := sd.(postcopyDomain)
		if !ok {
			return fmt.Errorf("%w: this connection cannot reach QEMU's monitor", errNotResumable)
		}
		st, qerr := pd.MigrationStatus()
		d := t.step(rl, st, qerr, dataURI != "", now)
		if d.note != "" {
			note(d.note)
		}
		switch d.do {
		case resumeFail:
			return d.err
		case resumeSend:
			if err := pd.ResumePostcopy(dataURI); err != nil {
				note(fmt.Sprintf("resume %d at %s to %s failed: %v", rl.attempts, now.Format("15:04:05.000"), dataURI, err))
			} else {
				note(fmt.Sprintf("resume %d at %s: reconnecting to %s", rl.attempts, now.Format("15:04:05.000"), dataURI))
			}
		case resumeKick:
			if pp, ok := sd.(interface{ PausePostcopy() error }); ok {
				if err := pp.PausePostcopy(); err != nil {
					log.WithError(err).Warn("migrate-pause of a hung reconnection")
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrPostcopyPaused, ctx.Err())
		case <-time.After(resumePollInterval):
		}
	}
}

// resumePostcopy runs after the migration call failed once post-copy had
// started. It returns nil when the resumed copy completed (commit follows),
// ErrPostcopyPaused when the job is left for recover, errNotResumable when
// convergence must decide.
func (m *move) resumePostcopy(bg context.Context, w *watch, cause error) error {
	m.log.WithError(cause).Warn("post-copy interrupted; resuming it")
	m.progress(Progress{Stage: journal.StageStopAndCopy, Elapsed: m.c.now().Sub(w.start), Live: &LiveProgress{Postcopy: true},
		Message: "post-copy interrupted (" + cause.Error() + "); resuming"})
	w.resumes = &resumeLog{}
	record := func() {
		if err := m.c.Journal.Update(bg, m.rec.ID, map[string]any{"notes": w.resumes.String()}); err != nil {
			m.log.WithError(err).Error("journal")
		}
		if n := len(w.resumes.lines); n > 0 {
			m.progress(Progress{Stage: journal.StageStopAndCopy, Elapsed: m.c.now().Sub(w.start), Live: &LiveProgress{Postcopy: true}, Message: w.resumes.lines[n-1]})
		}
	}
	pol := ResumePolicy{Window: m.req.Live.PostcopyResumeWindow}
	err := m.c.resumeLoop(bg, m.log, m.srcConn, m.dstConn, m.info.UUID, w.dataURI, pol, w.resumes, record)
	if err != nil {
		return fmt.Errorf("%w (after %v)", err, cause)
	}
	return nil
}

// resumeNotes is what the journal keeps of the resumes at commitment.
func (w *watch) resumeNotes() string {
	if w.resumes == nil {
		return ""
	}
	return w.resumes.String()
}

// pausedFor is the time the guest was frozen by post-copy pauses.
func (w *watch) pausedFor() time.Duration {
	if w.resumes == nil {
		return 0
	}
	return w.resumes.paused
}

// recoverPostcopy resumes a post-copy left paused by an earlier run (ferry
// recover); it returns a note for the journal, and nil error both when it
// resumed the copy to completion and when nothing was paused.
func (c *Controller) recoverPostcopy(ctx context.Context, log *logrus.Entry, src, dst virt.Host, r *journal.Record) (string, error) {
	d, err := src.LookupDomain(r.VMUUID)
	if err != nil {
		return "", nil // convergence looks at it
	}
	info, err := d.Info()
	if err != nil || info.State != virt.StatePaused || info.Reason != "postcopy-failed" {
		return "", nil
	}
	pd, ok := d.(postcopyDomain)
	if !ok {
		return "", nil
	}
	if st, err := pd.MigrationStatus(); err != nil || (st.Status != virt.MigPostcopyPaused && st.Status != virt.MigPostcopyRecoverSetup) {
		return "", nil
	}
	rl := &resumeLog{}
	record := func() {
		_ = c.Journal.Update(ctx, r.ID, map[string]any{"notes": "recover: " + rl.String()})
	}
	err = c.resumeLoop(ctx, log, src, dst, r.VMUUID, optionsDataURI(r.Options), ResumePolicy{}, rl, record)
	if err != nil {
		_ = c.Journal.Update(ctx, r.ID, map[string]any{"state": journal.StateFailed, "error": err.Error()})
		if errors.Is(err, ErrPostcopyPaused) {
			return "", fmt.Errorf("%w: %w", ErrNeedsRecovery, err)
		}
		return "", err
	}
	return "post-copy resumed by recover: " + rl.String(), nil
}
