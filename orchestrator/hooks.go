package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// Hooks: at stage boundaries ferry tells the outside world (load balancers,
// IPAM, change-freeze checks, chat) what a move is doing. Every event goes
// through dispatch, to the executables of the hooks directory and to the
// inventory's webhooks (webhook.go). Only pre-migration can stop a move;
// afterwards a hook's failure is reported and never changes where the VM runs.

// Hook events, in the order a move reaches them.
const (
	// HookPreMigration: stage 0 found the VM; nothing is reserved yet. A
	// failing hook refuses the move (ErrVetoed).
	HookPreMigration = "pre-migration"
	// HookReservation: the destination's memory (or disk space) is reserved
	// and the copy is about to start.
	HookReservation = "reservation"
	// HookSwitchover: the source paused for the final copy, or post-copy
	// moved the guest to the destination (live moves only).
	HookSwitchover = "switchover"
	// HookActivation: the VM is on the destination for good.
	HookActivation = "activation"
	// HookRollback: the move was undone; the VM stays on the source.
	HookRollback = "rollback"
)

// HookEvents lists every event in the order a move reaches them.
var HookEvents = []string{HookPreMigration, HookReservation, HookSwitchover, HookActivation, HookRollback}

func knownHookEvent(e string) bool {
	for _, k := range HookEvents {
		if k == e {
			return true
		}
	}
	return false
}

// DefaultHookTimeout bounds one hook executable.
const DefaultHookTimeout = 30 * time.Second

// DefaultHooksDir is used when neither the inventory nor a flag names one.
const DefaultHooksDir = "/etc/ferry/hooks.d"

// hookOutputLimit caps what ferry keeps of a hook's output: only the last
// line is reported, and a chatty hook must not grow ferry's memory.
const hookOutputLimit = 64 << 10

// HookPayload is the JSON document a hook reads on stdin and a webhook
// receives as its body.
type HookPayload struct {
	Event string `json:"event"` // one of HookEvents
	// Stage is the journal stage at the event: pre-migration, reservation,
	// stop-and-copy (switchover), activation; for rollback the stage the
	// move had reached when it failed.
	Stage string `json:"stage"`
	Kind  string `json:"kind"` // live or cold
	// Timestamp is when the event happened (for switchover: when the
	// source paused), UTC.
	Timestamp      time.Time `json:"timestamp"`
	MigrationID    string    `json:"migration_id"`
	VM             string    `json:"vm"`
	VMUUID         string    `json:"vm_uuid"`
	Source         string    `json:"source"`
	SourceURI      string    `json:"source_uri"`
	Destination    string    `json:"destination"`
	DestinationURI string    `json:"destination_uri"`
	// DowntimeMS is libvirt's measured downtime, set in activation of a
	// live move (0 elsewhere).
	DowntimeMS int64  `json:"downtime_ms"`
	Postcopy   bool   `json:"postcopy,omitempty"`
	Error      string `json:"error,omitempty"`
}

// hookFailure is one executable or webhook that failed for an event.
type hookFailure struct {
	event  string
	what   string // "hook 10-freeze-check" or "webhook http://host/path"
	err    string // "exit status 1", "timed out after 30s", "HTTP 503 Service Unavailable"
	output string // last line of its output or response body
}

// String reads like `hook 10-freeze-check: exit status 1: "change freeze until 18:00"`.
func (f hookFailure) String() string {
	s := f.what + ": " + f.err
	if f.output != "" {
		s += ": " + strconv.Quote(f.output)
	}
	return s
}

// hookReport is what one event's executables and webhooks reported.
type hookReport struct {
	ran      int // executables and webhooks that were called
	failures []hookFailure
}

// errors are the failures as the result and the journal show them.
func (r hookReport) errors() []string {
	out := make([]string, 0, len(r.failures))
	for _, f := range r.failures {
		out = append(out, f.event+": "+f.String())
	}
	return out
}

func (c *Controller) hooksDir() string {
	switch {
	case c.HooksDir != "":
		return c.HooksDir
	case c.Inventory != nil && c.Inventory.HooksDir != "":
		return c.Inventory.HooksDir
	}
	return DefaultHooksDir
}

// dispatch sends one event to the executables of the hooks directory and to
// the webhooks subscribed to it; it is the only way an event leaves ferry.
// Executables run one after another in name order (an operator orders them
// by prefix, like run-parts); webhooks run concurrently beside them, each
// bounded by its own timeout.
//
// pre-migration is a gate: executables stop at the first failure, and the
// webhooks are only asked if every executable agreed, so nobody is told
// about a move that was already vetoed.
func (c *Controller) dispatch(ctx context.Context, log *logrus.Entry, p HookPayload) hookReport {
	if p.Timestamp.IsZero() {
		p.Timestamp = c.now()
	}
	p.Timestamp = p.Timestamp.UTC()
	body, err := json.Marshal(p)
	if err != nil { // cannot happen with these field types; report rather than panic
		return hookReport{failures: []hookFailure{{event: p.Event, what: "hooks", err: "encoding the payload: " + err.Error()}}}
	}
	gate := p.Event == HookPreMigration
	var hooks []WebhookConfig
	if c.Inventory != nil {
		for _, w := range c.Inventory.Webhooks {
			if w.wants(p.Event) {
				hooks = append(hooks, w)
			}
		}
	}
	var rep hookReport
	webFailures := make([]*hookFailure, len(hooks))
	var wg sync.WaitGroup
	startWebhooks := func() {
		rep.ran += len(hooks)
		for i, w := range hooks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				webFailures[i] = c.callWebhook(ctx, log, w, p.Event, body)
			}()
		}
	}
	if !gate {
		startWebhooks()
	}
	ran, execFailures := c.runExecutables(ctx, log, p, body, gate)
	rep.ran += ran
	rep.failures = append(rep.failures, execFailures...)
	if gate && len(execFailures) == 0 {
		startWebhooks()
	}
	wg.Wait()
	for _, f := range webFailures {
		if f != nil {
			rep.failures = append(rep.failures, *f)
		}
	}
	return rep
}

// pendingHooks is an event dispatched in the background.
type pendingHooks struct {
	done chan struct{}
	rep  hookReport
}

// dispatchAsync runs dispatch in a goroutine, for events raised inside the
// job-watch loop, which must keep sampling while a slow hook runs.
func (c *Controller) dispatchAsync(ctx context.Context, log *logrus.Entry, p HookPayload) *pendingHooks {
	ph := &pendingHooks{done: make(chan struct{})}
	go func() {
		defer close(ph.done)
		ph.rep = c.dispatch(ctx, log, p)
	}()
	return ph
}

// wait returns the report once every hook of the event has finished
// (each is bounded by its timeout); a nil pendingHooks reports nothing.
func (ph *pendingHooks) wait() hookReport {
	if ph == nil {
		return hookReport{}
	}
	<-ph.done
	return ph.rep
}

// ErrUnsafeHooks: the hooks directory or a hook could be changed by
// someone other than root or ferry's own user, so ferry runs none of them.
var ErrUnsafeHooks = errors.New("unsafe hooks")

// hookExecutables lists the executable regular files of dir in name order,
// skipping hidden files and editor backups. ferry runs them as itself
// (usually root), so the directory and every hook must be owned by root or
// ferry's user and writable by nobody else; otherwise none runs.
func hookExecutables(dir string) ([]string, error) {
	dinfo, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no hooks directory: nothing to run
	}
	if err != nil {
		return nil, fmt.Errorf("%w: hooks directory %s: %w", ErrUnsafeHooks, dir, err)
	}
	if !dinfo.IsDir() {
		return nil, fmt.Errorf("%w: hooks directory %s is not a directory", ErrUnsafeHooks, dir)
	}
	if err := safeHookFile("hooks directory", dir, dinfo); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the hooks directory %s: %w", ErrUnsafeHooks, dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		if err := safeHookFile("hook", filepath.Join(dir, n), info); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// safeHookFile refuses a hook or hooks directory that is group- or
// world-writable or owned by anyone but root or ferry's user.
func safeHookFile(what, path string, info os.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s %s is writable by its group or others (mode %04o): run chmod go-w %s; no hook runs until then",
			ErrUnsafeHooks, what, path, perm, path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not root or ferry's user (uid %d): run chown root %s; no hook runs until then",
			ErrUnsafeHooks, what, path, st.Uid, os.Geteuid(), path)
	}
	return nil
}

// runExecutables executes every hook of the hooks directory directly (no
// shell) with the event as its argument, the payload on stdin and as
// FERRY_* variables. With stopAtFailure the first failure ends the round.
func (c *Controller) runExecutables(ctx context.Context, log *logrus.Entry, p HookPayload, body []byte, stopAtFailure bool) (int, []hookFailure) {
	dir := c.hooksDir()
	timeout := c.HookTimeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"FERRY_EVENT=" + p.Event, "FERRY_STAGE=" + p.Stage, "FERRY_KIND=" + p.Kind,
		"FERRY_TIMESTAMP=" + p.Timestamp.Format(time.RFC3339Nano),
		"FERRY_MIGRATION_ID=" + p.MigrationID, "FERRY_VM=" + p.VM, "FERRY_VM_UUID=" + p.VMUUID,
		"FERRY_SOURCE=" + p.Source, "FERRY_SOURCE_URI=" + p.SourceURI,
		"FERRY_DESTINATION=" + p.Destination, "FERRY_DESTINATION_URI=" + p.DestinationURI,
		fmt.Sprintf("FERRY_DOWNTIME_MS=%d", p.DowntimeMS),
	}
	names, err := hookExecutables(dir)
	if err != nil {
		// At pre-migration this vetoes the move: an unchecked gate is no gate.
		log.WithError(err).Error("hooks refused")
		return 0, []hookFailure{{event: p.Event, what: "hooks", err: err.Error()}}
	}
	var failures []hookFailure
	ran := 0
	for _, n := range names {
		ran++
		f := runExecutable(ctx, log, filepath.Join(dir, n), n, p.Event, env, body, timeout)
		if f == nil {
			continue
		}
		failures = append(failures, *f)
		if stopAtFailure {
			break
		}
	}
	return ran, failures
}

func runExecutable(ctx context.Context, log *logrus.Entry, path, name, event string, env []string, body []byte, timeout time.Duration) *hookFailure {
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, path, event)
	cmd.Stdin = bytes.NewReader(body)
	cmd.Env = env
	out := &cappedBuffer{limit: hookOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout also ends what a script started
	// (a `sleep` under sh would otherwise outlive it and hold the pipe).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	l := log.WithFields(logrus.Fields{"hook": name, "event": event, "ms": time.Since(start).Milliseconds()})
	if err == nil {
		l.Info("hook ran")
		return nil
	}
	f := &hookFailure{event: event, what: "hook " + name, err: err.Error(), output: lastLine(out.String())}
	switch {
	case errors.Is(hctx.Err(), context.DeadlineExceeded):
		f.err = fmt.Sprintf("timed out after %s", timeout)
	case ctx.Err() != nil:
		f.err = "cancelled: " + ctx.Err().Error()
	}
	l.WithFields(logrus.Fields{"error": f.err, "output": f.output}).Warn("hook failed")
	return f
}

// cappedBuffer keeps the last part of what is written to it, up to limit bytes.
type cappedBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// payload is the event's document for this move, dated now.
func (m *migration) payload(event string) HookPayload {
	stage := event
	switch event {
	case HookSwitchover:
		stage = StageStopAndCopy.String()
	case HookRollback:
		stage = ""
	}
	kind := m.rec.Kind
	if kind == "" {
		kind = "live"
	}
	return HookPayload{Event: event, Stage: stage, Kind: kind, Timestamp: m.c.now(), MigrationID: m.rec.ID,
		VM: m.info.Name, VMUUID: m.info.UUID, Source: m.src.Name, SourceURI: m.src.URI,
		Destination: m.dst.Name, DestinationURI: m.dst.URI}
}

// fire dispatches an event of this move and keeps its failures for the result.
func (m *migration) fire(ctx context.Context, p HookPayload) {
	m.keepHookErrors(m.c.dispatch(ctx, m.log, p))
}

func (m *migration) keepHookErrors(rep hookReport) {
	m.res.HookErrors = append(m.res.HookErrors, rep.errors()...)
}

// preMigrationHooks asks the hooks whether the move may go ahead: any
// executable or subscribed webhook that fails refuses it, before anything
// is reserved. Dry runs and plans notify no one.
func (m *migration) preMigrationHooks(ctx context.Context) error {
	if m.req.DryRun {
		return nil
	}
	rep := m.c.dispatch(ctx, m.log, m.payload(HookPreMigration))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cancelled while the pre-migration hooks ran: %w", context.Cause(ctx))
	}
	if len(rep.failures) == 0 {
		if rep.ran > 0 {
			_ = m.check("pre-migration-hooks", nil, fmt.Sprintf("%d hooks and webhooks agreed", rep.ran))
		}
		return nil
	}
	msg := "vetoed by " + rep.failures[0].String()
	if n := len(rep.failures) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return m.check("pre-migration-hooks", refuse(ErrVetoed, nil, "%s", msg), "")
}

// awaitSwitchover collects the switchover hooks the job watch started. At
// commitment (committed) a switchover libvirt never reported (no lifecycle
// events) is announced late, dated when the pause must have begun, so
// receivers always see reservation, switchover, activation in that order.
func (m *migration) awaitSwitchover(ctx context.Context, committed bool, pausedAt time.Time) {
	w := m.watch
	if w == nil || w.hooksDone {
		return
	}
	w.hooksDone = true
	if w.switchover != nil {
		m.keepHookErrors(w.switchover.wait())
		return
	}
	if committed {
		p := m.payload(HookSwitchover)
		p.Timestamp, p.Postcopy = pausedAt, w.postcopy.Load()
		m.log.Info("switchover not seen in libvirt's events; announcing it at commitment")
		m.fire(ctx, p)
	}
}

// recoverHooks announces the outcome of a move that `ferry recover`
// finished (activation) or undid (rollback).
func (c *Controller) recoverHooks(ctx context.Context, log *logrus.Entry, r *Record, event, errText string) []string {
	kind := r.Kind
	if kind == "" {
		kind = "live"
	}
	p := HookPayload{Event: event, Stage: r.Stage.String(), Kind: kind, MigrationID: r.ID, VM: r.VM, VMUUID: r.VMUUID,
		Source: r.Source, SourceURI: r.SourceURI, Destination: r.Dest, DestinationURI: r.DestURI, Error: errText}
	if event == HookActivation {
		p.Stage = StageActivation.String()
		// recover may just have read libvirt's figures into the row.
		if fresh, err := c.Journal.Get(ctx, r.ID); err == nil {
			r = fresh
		}
		if r.DowntimeMS != nil {
			p.DowntimeMS = *r.DowntimeMS
		}
	}
	return c.dispatch(ctx, log, p).errors()
}
