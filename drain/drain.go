package drain

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/virt"
)

// tick is how often a drain looks for work it can start, a cancel request
// from another process, and slots freed by other processes.
const tick = 500 * time.Millisecond

// maxRequeues bounds how often a VM goes back to the queue because a race
// took its slot or memory (not counted as attempts).
const maxRequeues = 10

// run is the state of one Drain call.
type run struct {
	c         *orchestrator.Controller
	req       Request
	src       inventory.Host
	srcConn   virt.Host
	srcID     virt.Identity
	targets   []inventory.Host
	conns     map[string]virt.Host // target connections, dialled once
	log       *logrus.Entry
	persisted bool
	cancelled bool
	running   int
	done      chan moveOutcome

	mu         sync.Mutex // guards rep and the per-VM fields below
	rep        *Report
	errs       []error // why each failed VM failed (by index; nil: none)
	nextTry    []time.Time
	requeues   []int
	inflightTo map[string]int
	keys       map[string]string // target name -> host UUID as placement saw it; loop goroutine only
	lastSave   time.Time
}

// Drain marks req.Host in maintenance and moves every VM off it (live for
// running ones, cold for stopped ones unless RunningOnly) within the limits.
// Cancelling ctx stops new moves; moves in flight finish unless req.Abort is
// done, which rolls them back. The report is persisted as it changes.
// The error wraps orchestrator.ErrRefused for bad requests, ErrCancelled or
// ErrIncomplete (joined with each VM's *VMError) when the host is not empty
// at the end.
func Drain(ctx context.Context, c *orchestrator.Controller, req Request) (*Report, error) {
	req = withDefaults(req)
	if err := validate(req); err != nil {
		return nil, err
	}
	if c.Journal == nil {
		return nil, errors.New("drain: the controller has no journal")
	}
	if len(c.Inventory.Hosts) < 2 {
		return nil, orchestrator.NewRefusal(orchestrator.ErrInvalidRequest, nil, "drain needs an inventory with at least two hosts (--config): the host to drain and somewhere to put its VMs")
	}
	src, err := c.Resolve(req.Host)
	if err != nil {
		return nil, err
	}
	targets, err := drainTargets(c, src, req.Targets)
	if err != nil {
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	d := &run{c: c, req: req, src: src, targets: targets, conns: map[string]virt.Host{},
		done: make(chan moveOutcome, req.Parallel), inflightTo: map[string]int{}, keys: map[string]string{},
		log: c.Logger().WithFields(logrus.Fields{"drain": id, "host": src.Name})}
	d.rep = &Report{ID: id, Host: src.Name, State: StateRunning, DryRun: req.DryRun, Parallel: req.Parallel,
		MaxPerTarget: req.MaxPerTarget, StartedAt: c.Now(), Owner: journal.OwnerToken(), VMs: []VM{}}
	defer d.closeConns()

	if d.srcConn, err = c.DialHost(ctx, src); err != nil {
		return nil, err
	}
	if d.srcID, err = d.srcConn.Identity(); err != nil {
		return nil, orchestrator.NewRefusal(orchestrator.ErrUnreachable, err, "host %s: %v", src.Name, err)
	}
	if !req.DryRun {
		if err := d.begin(ctx); err != nil {
			if d.persisted {
				return d.end(ctx, err)
			}
			return nil, err
		}
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

// begin records the drain (refused while another live process drains the
// host), marks the host in maintenance and finishes the moves of this host
// that dead ferry processes left.
func (d *run) begin(ctx context.Context) error {
	if err := beginDrain(ctx, d.c.Journal, d.rep); err != nil {
		return err
	}
	d.persisted = true
	reason := "drain " + short(d.rep.ID)
	if d.req.Reason != "" {
		reason += ": " + d.req.Reason
	}
	if err := d.c.Journal.SetMaintenance(ctx, d.src.Name, reason); err != nil {
		return err
	}
	d.recoverInterrupted(ctx)
	return nil
}

func withDefaults(req Request) Request {
	if req.Parallel == 0 {
		req.Parallel = DefaultParallel
	}
	if req.MaxPerTarget == 0 {
		req.MaxPerTarget = DefaultMaxPerTarget
	}
	if req.Order == "" {
		req.Order = "smallest"
	}
	if req.Retries < 0 {
		req.Retries = 0
	}
	if req.Backoff == 0 {
		req.Backoff = DefaultBackoff
	}
	return req
}

// Validate checks a request's own fields as Drain will (after its
// defaults); nothing is touched. The CLI and the API call it before they
// answer, so their users get the same words.
func Validate(req Request) error { return validate(withDefaults(req)) }

func validate(req Request) error {
	switch {
	case req.Host == "":
		return orchestrator.NewRefusal(orchestrator.ErrInvalidRequest, nil, "no host to drain: give its inventory name")
	case !inventory.ValidName(req.Host):
		return orchestrator.NewRefusal(orchestrator.ErrInvalidRequest, nil, "host %q is not a valid inventory name (letters, digits, '.', '_', '-')", req.Host)
	case req.Backoff < 0:
		return orchestrator.NewRefusal(orchestrator.ErrInvalidRequest, nil, "--backoff must be positive")
	}
	for _, t := range req.Targets {
		if t == req.Host {
			return orchestrator.NewRefusal(orchestrator.ErrSameHost, nil, "--to %s is the host being drained", t)
		}
	}
	if _, ok := vmOrders[req.Order]; !ok {
		return orchestrator.NewRefusal(orchestrator.ErrInvalidRequest, nil, "--order %q: use smallest, largest or name", req.Order)
	}
	// Before anything is sized from them (the done channel holds Parallel).
	return req.CheckRanges()
}

// drainTargets resolves the hosts VMs may go to: the given ones, or every
// other inventory host.
func drainTargets(c *orchestrator.Controller, src inventory.Host, names []string) ([]inventory.Host, error) {
	var out []inventory.Host
	if len(names) == 0 {
		for _, h := range c.Inventory.Hosts {
			if h.URI != src.URI {
				out = append(out, h)
			}
		}
		return out, nil
	}
	for _, n := range names {
		h, err := c.Resolve(n)
		if err != nil {
			return nil, err
		}
		if h.URI == src.URI {
			return nil, orchestrator.NewRefusal(orchestrator.ErrSameHost, nil, "--to %s is the host being drained", n)
		}
		out = append(out, h)
	}
	return out, nil
}

func (d *run) closeConns() {
	if d.srcConn != nil {
		d.srcConn.Close()
	}
	for _, c := range d.conns {
		c.Close()
	}
}

// recoverInterrupted finishes moves of this host left by dead ferry
// processes (an interrupted earlier drain), so a re-run starts clean.
func (d *run) recoverInterrupted(ctx context.Context) {
	rows, err := d.c.Journal.Unfinished(ctx)
	if err != nil {
		d.log.WithError(err).Warn("listing unfinished migrations")
		return
	}
	for _, r := range rows {
		if (r.Source != d.src.Name && r.Dest != d.src.Name) || (r.State == journal.StateRunning && d.c.Journal.OwnerAlive(ctx, r.Owner)) {
			continue
		}
		res, err := d.c.Recover(ctx, orchestrator.RecoverOptions{ID: r.ID})
		note := r.VM + " (" + short(r.ID) + "): recovered"
		switch {
		case err != nil:
			note = r.VM + " (" + short(r.ID) + "): recover failed: " + err.Error()
		case len(res) == 1 && res[0].RunsOn != "":
			note = r.VM + " (" + short(r.ID) + "): recovered, runs on " + res[0].RunsOn
		}
		d.rep.Recovered = append(d.rep.Recovered, note)
		d.log.Info(note)
	}
}

// short abbreviates an id for messages.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
