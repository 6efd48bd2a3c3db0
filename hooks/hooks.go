package hooks

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Events, in the order a move reaches them.
const (
	// PreMigration: stage 0 found the VM; nothing is reserved yet. A failing
	// hook refuses the move.
	PreMigration = "pre-migration"
	// Reservation: the destination's memory (or disk space) is reserved and
	// the copy is about to start.
	Reservation = "reservation"
	// Switchover: the source paused for the final copy, or post-copy moved
	// the guest to the destination (live moves only).
	Switchover = "switchover"
	// Activation: the VM is on the destination for good.
	Activation = "activation"
	// Rollback: the move was undone; the VM stays on the source.
	Rollback = "rollback"
)

// Events lists every event in the order a move reaches them.
var Events = []string{PreMigration, Reservation, Switchover, Activation, Rollback}

func knownEvent(e string) bool { return slices.Contains(Events, e) }

// DefaultTimeout bounds one hook executable.
const DefaultTimeout = 30 * time.Second

// DefaultDir is used when neither the inventory nor a flag names one.
const DefaultDir = "/etc/ferry/hooks.d"

// outputLimit caps what ferry keeps of a hook's output: only the last line
// is reported, and a chatty hook must not grow ferry's memory.
const outputLimit = 64 << 10

// Payload is the JSON document a hook reads on stdin and a webhook receives
// as its body.
type Payload struct {
	Event string `json:"event"` // one of Events
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

// Failure is one executable or webhook that failed for an event.
type Failure struct {
	Event  string
	What   string // "hook 10-freeze-check" or "webhook http://host/path"
	Err    string // "exit status 1", "timed out after 30s", "HTTP 503 Service Unavailable"
	Output string // last line of its output or response body
}

// String reads like `hook 10-freeze-check: exit status 1: "change freeze until 18:00"`.
func (f Failure) String() string {
	s := f.What + ": " + f.Err
	if f.Output != "" {
		s += ": " + strconv.Quote(f.Output)
	}
	return s
}

// Report is what one event's executables and webhooks reported.
type Report struct {
	Ran      int // executables and webhooks that were called
	Failures []Failure
}

// Errors are the failures as results and the journal show them.
func (r Report) Errors() []string {
	out := make([]string, 0, len(r.Failures))
	for _, f := range r.Failures {
		out = append(out, f.Event+": "+f.String())
	}
	return out
}

// Runner sends events; its zero value runs DefaultDir's executables with
// DefaultTimeout and calls no webhook.
type Runner struct {
	Dir      string        // "": DefaultDir
	Timeout  time.Duration // per executable; 0: DefaultTimeout
	Webhooks []Webhook
	Now      func() time.Time // dates an event without a timestamp; nil: time.Now
}

func (r *Runner) dir() string {
	if r.Dir != "" {
		return r.Dir
	}
	return DefaultDir
}

func (r *Runner) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// Dispatch sends one event to the executables of the hooks directory and to
// the webhooks subscribed to it; it is the only way an event leaves ferry.
// Executables run one after another in name order (an operator orders them
// by prefix, like run-parts); webhooks run concurrently beside them, each
// bounded by its own timeout.
//
// pre-migration is a gate: executables stop at the first failure, and the
// webhooks are only asked if every executable agreed, so nobody is told
// about a move that was already vetoed.
func (r *Runner) Dispatch(ctx context.Context, log *logrus.Entry, p Payload) Report {
	if p.Timestamp.IsZero() {
		p.Timestamp = time.Now()
		if r.Now != nil {
			p.Timestamp = r.Now()
		}
	}
	p.Timestamp = p.Timestamp.UTC()
	body, err := json.Marshal(p)
	if err != nil { // cannot happen with these field types; report rather than panic
		return Report{Failures: []Failure{{Event: p.Event, What: "hooks", Err: "encoding the payload: " + err.Error()}}}
	}
	gate := p.Event == PreMigration
	var hooks []Webhook
	for _, w := range r.Webhooks {
		if w.Wants(p.Event) {
			hooks = append(hooks, w)
		}
	}
	var rep Report
	webFailures := make([]*Failure, len(hooks))
	var wg sync.WaitGroup
	startWebhooks := func() {
		rep.Ran += len(hooks)
		for i, w := range hooks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				webFailures[i] = w.call(ctx, log, p.Event, body)
			}()
		}
	}
	if !gate {
		startWebhooks()
	}
	ran, execFailures := r.runExecutables(ctx, log, p, body, gate)
	rep.Ran += ran
	rep.Failures = append(rep.Failures, execFailures...)
	if gate && len(execFailures) == 0 {
		startWebhooks()
	}
	wg.Wait()
	for _, f := range webFailures {
		if f != nil {
			rep.Failures = append(rep.Failures, *f)
		}
	}
	return rep
}

// Pending is an event dispatched in the background.
type Pending struct {
	done chan struct{}
	rep  Report
}

// DispatchAsync runs Dispatch in a goroutine, for events raised inside a
// loop that must keep going while a slow hook runs.
func (r *Runner) DispatchAsync(ctx context.Context, log *logrus.Entry, p Payload) *Pending {
	ph := &Pending{done: make(chan struct{})}
	go func() {
		defer close(ph.done)
		ph.rep = r.Dispatch(ctx, log, p)
	}()
	return ph
}

// Wait returns the report once every hook of the event has finished (each
// is bounded by its timeout); a nil Pending reports nothing.
func (ph *Pending) Wait() Report {
	if ph == nil {
		return Report{}
	}
	<-ph.done
	return ph.rep
}
