package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/journal"
)

// drainJob is a drain this server runs. Its lifecycle's accepted closes at
// the drain's first report, or when it ended.
type drainJob struct {
	lifecycle
	id, host string
	dryRun   bool
	// stop ends the drain's scheduling (no new moves); abort rolls back
	// its moves in flight.
	stop, abort context.CancelFunc

	mu             sync.Mutex
	report         *drain.Report // last snapshot, then the final report
	err            error
	cancelRequest  bool
	abortRequested bool
}

// DrainView is a drain as GET shows it: its persisted (or, while this
// server runs it, live) report.
type DrainView struct {
	*drain.Report
	Managed        bool   `json:"managed"`
	OwnerPID       int    `json:"owner_pid,omitempty"`
	AbortRequested bool   `json:"abort_requested,omitempty"`
	Outcome        string `json:"outcome,omitempty"` // why the drain did not empty the host, or failed
}

// DrainAccepted answers POST /v1/hosts/{host}/drain.
type DrainAccepted struct {
	ID       string `json:"id"`
	Location string `json:"location"`
	Host     string `json:"host"`
	Existing bool   `json:"existing,omitempty"`
	State    string `json:"state"`
}

func drainLocation(id string) string { return "/v1/drains/" + id }

// drainHost serves POST /v1/hosts/{host}/drain.
func (s *Server) drainHost(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return
	}
	host := r.PathValue("host")
	var body DrainRequest
	if err := decodeBody(w, r, s.cfg.MaxBodyBytes, &body, true); err != nil {
		writeError(w, r, err)
		return
	}
	req, err := body.validate(s.ctl.Inventory, host)
	if err != nil {
		writeError(w, r, err)
		return
	}
	note(r, "host", host)
	s.mu.Lock()
	if d := s.draining[host]; d != nil && !req.DryRun {
		s.mu.Unlock()
		note(r, "drain", d.id)
		writeJSON(w, http.StatusOK, DrainAccepted{ID: d.id, Location: drainLocation(d.id), Host: host, Existing: true, State: drain.StateRunning})
		return
	}
	if err := s.starting(); err != nil {
		s.mu.Unlock()
		writeError(w, r, err)
		return
	}
	d := &drainJob{lifecycle: newLifecycle(), id: uuid.NewString(), host: host, dryRun: req.DryRun}
	ctx, stop := context.WithCancel(s.drainsCtx)
	abortCtx, abort := context.WithCancel(s.movesCtx)
	d.stop, d.abort = stop, abort
	s.drains[d.id] = d
	if !req.DryRun {
		s.draining[host] = d
	}
	s.mu.Unlock()
	note(r, "drain", d.id)
	req.ID, req.Abort = d.id, abortCtx
	req.Progress = func(rep drain.Report) {
		d.mu.Lock()
		d.report = &rep
		d.mu.Unlock()
		d.accept()
	}
	s.metrics.drains.Inc()
	go s.runDrain(ctx, d, req)

	wait := d.accepted
	if req.DryRun {
		wait = d.done // a dry run answers with its plan
	}
	select {
	case <-wait:
	case <-r.Context().Done():
		return
	}
	d.mu.Lock()
	rep, derr := d.report, d.err
	d.mu.Unlock()
	switch {
	case rep == nil && derr != nil:
		e := toError(derr)
		if e.status == http.StatusInternalServerError {
			e.Message = "drain failed before it started: " + e.Message
		}
		writeError(w, r, e)
	case req.DryRun:
		writeJSON(w, http.StatusOK, s.drainView(d))
	default:
		writeJSON(w, http.StatusAccepted, DrainAccepted{ID: d.id, Location: drainLocation(d.id), Host: host, State: rep.State})
	}
}

func (s *Server) runDrain(ctx context.Context, d *drainJob, req drain.Request) {
	defer s.wg.Done()
	defer d.stop()
	defer d.abort()
	log := s.log.WithFields(logrus.Fields{"drain": d.id, "host": d.host})
	log.Info("drain starting")
	rep, err := s.safeDrain(ctx, log, req)
	d.mu.Lock()
	if rep != nil {
		d.report = rep
	}
	d.err = err
	d.mu.Unlock()
	d.end()
	s.mu.Lock()
	if s.draining[d.host] == d {
		delete(s.draining, d.host)
	}
	s.retire(d.id)
	s.mu.Unlock()
	f := log
	if rep != nil {
		f = f.WithFields(logrus.Fields{"state": rep.State, "moved": rep.Moved, "failed": rep.Failed})
	}
	if err != nil {
		f = f.WithError(err)
	}
	f.Info("drain ended")
}

// safeDrain runs the drain; a panic in it becomes its error instead of
// ending the process with every move in flight.
func (s *Server) safeDrain(ctx context.Context, log *logrus.Entry, req drain.Request) (rep *drain.Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.WithFields(logrus.Fields{"panic": fmt.Sprint(p), "stack": string(debug.Stack())}).Error("drain panicked")
			rep, err = nil, fmt.Errorf("internal error in the drain (panic: %v): check its moves with GET /v1/migrations?state=running; `ferry recover` finishes any it left", p)
		}
	}()
	return drain.Drain(ctx, s.ctl, req)
}

func (s *Server) lookupDrain(id string) *drainJob {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drains[id]
}

// drainOf names the drain of this server that started a migration.
func (s *Server) drainOf(migrationID string) string {
	s.mu.Lock()
	ds := make([]*drainJob, 0, len(s.drains))
	for _, d := range s.drains {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	for _, d := range ds {
		d.mu.Lock()
		rep := d.report
		d.mu.Unlock()
		if rep == nil {
			continue
		}
		for _, v := range rep.VMs {
			if slices.Contains(v.Migrations, migrationID) {
				return d.id
			}
		}
	}
	return ""
}

func (s *Server) drainView(d *drainJob) *DrainView {
	d.mu.Lock()
	defer d.mu.Unlock()
	rep := d.report
	if rep == nil {
		rep = &drain.Report{ID: d.id, Host: d.host, State: drain.StateRunning, DryRun: d.dryRun}
		if d.isDone() {
			rep.State = "refused"
		}
	}
	cp := *rep
	v := &DrainView{Report: &cp, Managed: true, AbortRequested: d.abortRequested, OwnerPID: journal.OwnerPID(rep.Owner)}
	if d.err != nil {
		v.Outcome = d.err.Error()
	}
	if d.cancelRequest {
		v.Cancel = true
	}
	return v
}

// drain serves /v1/drains/{id}.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.getDrain(w, r)
	case http.MethodDelete:
		s.cancelDrain(w, r)
	default:
		methodNotAllowed(w, r, http.MethodGet, http.MethodDelete)
	}
}

func (s *Server) getDrain(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "drain")
	if err != nil {
		writeError(w, r, err)
		return
	}
	note(r, "drain", id)
	if d := s.lookupDrain(id); d != nil {
		writeJSON(w, http.StatusOK, s.drainView(d))
		return
	}
	rep, err := drain.Get(r.Context(), s.ctl.Journal, id)
	if err != nil {
		if errors.Is(err, drain.ErrUnknown) {
			err = apiErr(http.StatusNotFound, "unknown_drain", fmt.Sprintf("no drain %q (give the id POST /v1/hosts/HOST/drain returned)", id))
		}
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, &DrainView{Report: rep, OwnerPID: journal.OwnerPID(rep.Owner)})
}

// cancelDrain serves DELETE /v1/drains/{id}[?abort=true]: the drain starts
// no new moves; its moves in flight finish, or with abort=true roll back.
func (s *Server) cancelDrain(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "drain")
	if err != nil {
		writeError(w, r, err)
		return
	}
	note(r, "drain", id)
	q := r.URL.Query()
	if err := onlyParams(q, "abort"); err != nil {
		writeError(w, r, err)
		return
	}
	abort := false
	switch q.Get("abort") {
	case "", "false", "0":
	case "true", "1":
		abort = true
	default:
		writeError(w, r, invalid("abort %q: true or false", q.Get("abort")))
		return
	}
	if d := s.lookupDrain(id); d != nil {
		// Ended as soon as its report says so: the report reaches readers
		// a moment before the drain's goroutine returns.
		if v := s.drainView(d); d.isDone() || (v.Report != nil && v.State != drain.StateRunning) {
			writeError(w, r, apiErr(http.StatusConflict, "finished", fmt.Sprintf("drain %s already ended: %s", id, v.State)))
			return
		}
		d.mu.Lock()
		d.cancelRequest = true
		d.abortRequested = d.abortRequested || abort
		d.mu.Unlock()
		d.stop()
		if abort {
			d.abort()
		}
		msg := "cancel requested: no new moves start; moves in flight finish"
		if abort {
			msg = "abort requested: no new moves start; moves in flight roll back (unless past commitment)"
		}
		s.log.WithFields(logrus.Fields{"drain": id, "host": d.host, "abort": abort}).Info("drain cancel requested over the API")
		v := s.drainView(d)
		writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "state": "cancelling", "message": msg, "drain": v})
		return
	}
	rep, err := drain.Get(r.Context(), s.ctl.Journal, id)
	if err != nil {
		if errors.Is(err, drain.ErrUnknown) {
			err = apiErr(http.StatusNotFound, "unknown_drain", fmt.Sprintf("no drain %q", id))
		}
		writeError(w, r, err)
		return
	}
	pid := journal.OwnerPID(rep.Owner)
	if rep.State != drain.StateRunning {
		writeError(w, r, apiErr(http.StatusConflict, "finished", fmt.Sprintf("drain %s of %s is not running: %s", id, rep.Host, rep.State)))
		return
	}
	if abort {
		e := apiErr(http.StatusConflict, "other_process", fmt.Sprintf("drain %s is run by ferry pid %d, not this server: this server can only ask it to stop starting moves (DELETE without abort); interrupt pid %d to roll its moves back", id, pid, pid))
		e.OwnerPID = pid
		writeError(w, r, e)
		return
	}
	if rep, err = drain.Cancel(r.Context(), s.ctl.Journal, id); err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "state": "cancelling", "owner_pid": pid,
		"message": fmt.Sprintf("cancel requested: drain %s (ferry pid %d) starts no new moves; moves in flight finish", id, pid),
		"drain":   &DrainView{Report: rep, OwnerPID: pid}})
}
