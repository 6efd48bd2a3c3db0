package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/orchestrator"
)

// move is a migration this server runs.
type move struct {
	id     string
	vm     string // as requested: a name or a UUID
	kind   string // live or cold
	cancel context.CancelCauseFunc
	// accepted is closed once the move holds its reservation, or ended:
	// then the POST answers.
	accepted   chan struct{}
	acceptOnce sync.Once
	done       chan struct{}

	mu              sync.Mutex
	stage           orchestrator.Stage
	learned         bool
	progress        any // orchestrator.Progress or orchestrator.ColdProgress
	postcopy        bool
	placement       *orchestrator.Placement
	result          any // *orchestrator.Result or *orchestrator.ColdResult
	state           string
	err             error
	cancelRequested bool
	// refusedAs is the journal row of a refusal that happened before the
	// orchestrator took the move (placement found no host).
	refusedAs string
}

func (m *move) accept() { m.acceptOnce.Do(func() { close(m.accepted) }) }

func (m *move) isDone() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Accepted is the answer to a POST that started (202) or found (200) a move.
type Accepted struct {
	ID       string `json:"id"`
	Location string `json:"location"`
	// Existing: the VM was already being moved; ID is that migration.
	Existing bool   `json:"existing,omitempty"`
	State    string `json:"state"`
	Stage    string `json:"stage,omitempty"`
	// Managed: this server runs it (it can be cancelled here).
	Managed  bool   `json:"managed"`
	OwnerPID int    `json:"owner_pid,omitempty"`
	Source   string `json:"source,omitempty"`
	Dest     string `json:"destination,omitempty"`
}

// MigrationView is a migration as GET shows it: the journal row, and while
// this server runs it, the last progress snapshot and the result.
type MigrationView struct {
	*orchestrator.Record
	// Options shadows the row's options text with the JSON object it holds.
	Options         json.RawMessage         `json:"options,omitempty"`
	OwnerPID        int                     `json:"owner_pid,omitempty"`
	Managed         bool                    `json:"managed"`
	CancelRequested bool                    `json:"cancel_requested,omitempty"`
	Progress        any                     `json:"progress,omitempty"`
	Placement       *orchestrator.Placement `json:"placement,omitempty"`
	Result          any                     `json:"result,omitempty"`
}

func location(id string) string { return "/v1/migrations/" + id }

// migrations serves /v1/migrations.
func (s *Server) migrations(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		s.startMigration(w, r)
	case http.MethodGet, http.MethodHead:
		s.listMigrations(w, r)
	default:
		methodNotAllowed(w, r, http.MethodGet, http.MethodPost)
	}
}

// migration serves /v1/migrations/{id}.
func (s *Server) migration(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.getMigration(w, r)
	case http.MethodDelete:
		s.cancelMigration(w, r)
	default:
		methodNotAllowed(w, r, http.MethodGet, http.MethodDelete)
	}
}

func (s *Server) startMigration(w http.ResponseWriter, r *http.Request) {
	var body MigrationRequest
	if err := decodeBody(w, r, s.cfg.MaxBodyBytes, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	p, err := body.validate(s.ctl.Inventory)
	if err != nil {
		if validVM("vm", body.VM) == nil {
			note(r, "vm", body.VM)
			// Every refusal leaves a journal row, as with `ferry migrate`.
			// What Refuse returns is the refusal itself; the answer below
			// keeps the API's own status and message.
			_ = s.ctl.Refuse(r.Context(), orchestrator.Request{VM: body.VM, To: body.To, From: body.From}, err)
		}
		writeError(w, r, err)
		return
	}
	note(r, "vm", body.VM)
	s.mu.Lock()
	if m := s.active[body.VM]; m != nil && !m.isDone() {
		s.mu.Unlock()
		note(r, "migration", m.id)
		writeJSON(w, http.StatusOK, s.acceptedView(m, true))
		return
	}
	if err := s.starting(); err != nil {
		s.mu.Unlock()
		writeError(w, r, err)
		return
	}
	kind := "live"
	if body.Cold {
		kind = "cold"
	}
	m := &move{id: uuid.NewString(), vm: body.VM, kind: kind, accepted: make(chan struct{}), done: make(chan struct{}), state: orchestrator.StateRunning}
	ctx, cancel := context.WithCancelCause(s.movesCtx)
	m.cancel = cancel
	s.moves[m.id] = m
	s.active[body.VM] = m
	s.mu.Unlock()
	note(r, "migration", m.id)
	s.metrics.started.WithLabelValues(kind).Inc()
	go s.run(ctx, m, p)

	select {
	case <-m.accepted:
	case <-r.Context().Done():
		return // the client left; the move goes on
	}
	m.mu.Lock()
	merr, refusedAs, reserved := m.err, m.refusedAs, m.learned
	m.mu.Unlock()
	// Past its reservation the move was accepted, even if it has already
	// ended since: its outcome is GET's to tell.
	if merr == nil || reserved {
		writeJSON(w, http.StatusAccepted, s.acceptedView(m, false))
		return
	}
	if errors.Is(merr, orchestrator.ErrBusy) {
		if rec := s.openMigration(r.Context(), m); rec != nil {
			note(r, "existing", rec.ID)
			writeJSON(w, http.StatusOK, s.recordAccepted(rec))
			return
		}
	}
	e := toError(merr)
	if e.status == http.StatusInternalServerError {
		e.Message = "migration failed before its reservation: " + e.Message
	}
	e.ID = m.id
	if refusedAs != "" {
		e.ID = refusedAs
	}
	writeError(w, r, e)
}

// run carries out one move: placement if asked, then the orchestrator.
func (s *Server) run(ctx context.Context, m *move, p *plan) {
	defer s.wg.Done()
	defer m.cancel(nil)
	defer s.recoverMove(m)
	log := s.log.WithFields(logrus.Fields{"migration": m.id, "vm": m.vm, "kind": m.kind})
	if p.auto {
		pl, err := s.ctl.Place(ctx, m.vm, p.place)
		if err == nil {
			err = pl.Err()
		}
		if err != nil {
			// Journal the refusal like any other (under its own id: the
			// orchestrator never took this move).
			jerr := s.ctl.Refuse(context.WithoutCancel(ctx), orchestrator.Request{VM: m.vm, To: "auto", From: p.live.From}, err)
			if rows, lerr := s.ctl.Journal.List(context.WithoutCancel(ctx), orchestrator.ListFilter{VM: m.vm, State: orchestrator.StateRefused, Limit: 1}); lerr == nil && len(rows) == 1 {
				m.mu.Lock()
				m.refusedAs = rows[0].ID
				m.mu.Unlock()
			}
			log.WithError(err).Info("placement refused the move")
			s.finish(m, nil, orchestrator.StateRefused, jerr)
			return
		}
		m.mu.Lock()
		m.placement = pl
		m.mu.Unlock()
		p.live.To, p.live.From, p.cold.To, p.cold.From = pl.Host, pl.Source, pl.Host, pl.Source
		log = log.WithField("dst", pl.Host)
		log.WithField("reason", pl.Reason).Info("placement chose a destination")
	}
	log.Info("migration starting")
	if m.kind == "cold" {
		req := p.cold
		req.ID = m.id
		req.Progress = func(cp orchestrator.ColdProgress) { s.onProgress(m, cp.Stage, cp, false) }
		res, err := s.ctl.MigrateCold(ctx, req)
		state := ""
		if res != nil {
			state = res.State
		}
		s.finish(m, res, state, err)
		return
	}
	req := p.live
	req.ID = m.id
	req.Progress = func(lp orchestrator.Progress) { s.onProgress(m, lp.Stage, lp, lp.Postcopy) }
	res, err := s.ctl.Migrate(ctx, req)
	state := ""
	if res != nil {
		state = res.State
	}
	s.finish(m, res, state, err)
}

// recoverMove turns a panic of a move's goroutine into its failure: the
// journal row is marked failed (so `ferry recover` takes it) and the server
// goes on serving its other moves.
func (s *Server) recoverMove(m *move) {
	p := recover()
	if p == nil {
		return
	}
	log := s.log.WithFields(logrus.Fields{"migration": m.id, "vm": m.vm, "panic": fmt.Sprint(p), "stack": string(debug.Stack())})
	log.Error("migration panicked")
	err := fmt.Errorf("%w: internal error in ferry serve (panic: %v): run `ferry recover %s` to settle where the VM runs", orchestrator.ErrNeedsRecovery, p, m.id)
	bg := context.Background()
	if rec, jerr := s.ctl.Journal.Get(bg, m.id); jerr == nil && rec.State == orchestrator.StateRunning {
		if jerr := s.ctl.Journal.Finish(bg, m.id, orchestrator.StateFailed, err.Error(), nil); jerr != nil {
			log.WithError(jerr).Error("journal")
		}
	}
	if !m.isDone() {
		s.finish(m, nil, orchestrator.StateFailed, err)
	}
}

// onProgress keeps the last snapshot; at the reservation it learns the VM's
// name and UUID from the journal (dedup by either) and lets the POST answer.
func (s *Server) onProgress(m *move, stage orchestrator.Stage, snap any, postcopy bool) {
	m.mu.Lock()
	m.stage, m.progress = stage, snap
	m.postcopy = m.postcopy || postcopy
	first := !m.learned && stage >= orchestrator.StageReservation
	if first {
		m.learned = true
	}
	m.mu.Unlock()
	if !first {
		return
	}
	if rec, err := s.ctl.Journal.Get(context.Background(), m.id); err == nil {
		s.mu.Lock()
		for _, k := range []string{rec.VM, rec.VMUUID} {
			if k != "" && s.active[k] == nil && !m.isDone() {
				s.active[k] = m
			}
		}
		s.mu.Unlock()
	}
	m.accept()
}

// finish records a move's outcome and forgets it as in flight.
func (s *Server) finish(m *move, result any, state string, err error) {
	if state == "" {
		state = orchestrator.StateFailed
		if errors.Is(err, orchestrator.ErrRefused) {
			state = orchestrator.StateRefused
		}
	}
	m.mu.Lock()
	if result != nil {
		m.result = result
	}
	m.state, m.err = state, err
	m.mu.Unlock()
	close(m.done)
	m.accept()
	s.mu.Lock()
	for k, v := range s.active {
		if v == m {
			delete(s.active, k)
		}
	}
	s.retire(m.id)
	s.mu.Unlock()
	s.metrics.finished.WithLabelValues(m.kind, state).Inc()
	f := s.log.WithFields(logrus.Fields{"migration": m.id, "vm": m.vm, "state": state})
	if err != nil {
		f = f.WithError(err)
	}
	f.Info("migration ended")
}

// openMigration finds the unfinished migration that made the orchestrator
// refuse m as busy, if its process still runs (a dead one's row is for
// `ferry recover`, not something to wait for).
func (s *Server) openMigration(ctx context.Context, m *move) *orchestrator.Record {
	var cands []*orchestrator.Record
	if rec, err := s.ctl.Journal.Get(ctx, m.id); err == nil && rec.VMUUID != "" {
		if open, err := s.ctl.Journal.OpenForVM(ctx, rec.VMUUID); err == nil && open != nil {
			cands = append(cands, open)
		}
	}
	if rows, err := s.ctl.Journal.List(ctx, orchestrator.ListFilter{VM: m.vm, State: orchestrator.StateRunning, Limit: 5}); err == nil {
		cands = append(cands, rows...)
	}
	for _, rec := range cands {
		if rec.ID != m.id && rec.State == orchestrator.StateRunning && s.ctl.Journal.OwnerAlive(ctx, rec.Owner) {
			return rec
		}
	}
	return nil
}

func (s *Server) acceptedView(m *move, existing bool) Accepted {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := Accepted{ID: m.id, Location: location(m.id), Existing: existing, State: m.state, Stage: m.stage.String(), Managed: true}
	switch res := m.result.(type) {
	case *orchestrator.Result:
		a.Source, a.Dest = res.Source, res.Dest
	case *orchestrator.ColdResult:
		a.Source, a.Dest = res.Source, res.Dest
	}
	if m.placement != nil {
		a.Source, a.Dest = m.placement.Source, m.placement.Host
	}
	return a
}

func (s *Server) recordAccepted(rec *orchestrator.Record) Accepted {
	s.mu.Lock()
	_, managed := s.moves[rec.ID]
	s.mu.Unlock()
	return Accepted{ID: rec.ID, Location: location(rec.ID), Existing: true, State: rec.State, Stage: rec.StageName,
		Managed: managed, OwnerPID: orchestrator.OwnerPID(rec.Owner), Source: rec.Source, Dest: rec.Dest}
}

func (s *Server) lookupMove(id string) *move {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moves[id]
}

// view builds what GET shows: the journal row, overlaid with what this
// server knows of a move it runs.
func (s *Server) view(ctx context.Context, id string) (*MigrationView, *move, error) {
	rec, err := s.ctl.Journal.Get(ctx, id)
	m := s.lookupMove(id)
	if err == nil && m == nil {
		m = s.lookupMove(rec.ID)
	}
	if err != nil && (m == nil || !errors.Is(err, orchestrator.ErrNoRecord)) {
		if errors.Is(err, orchestrator.ErrNoRecord) {
			return nil, nil, apiErr(http.StatusNotFound, "unknown_migration", fmt.Sprintf("no migration %q in the journal", id))
		}
		return nil, nil, err
	}
	if rec == nil {
		// Still choosing a destination: no journal row yet.
		rec = &orchestrator.Record{ID: m.id, Kind: m.kind, VM: m.vm, State: orchestrator.StateRunning, StageName: orchestrator.StagePreMigration.String()}
	}
	v := newView(rec)
	if m != nil {
		m.mu.Lock()
		v.Managed, v.CancelRequested, v.Placement = true, m.cancelRequested, m.placement
		if m.isDone() {
			v.Result = m.result
		} else {
			v.Progress = m.progress
		}
		m.mu.Unlock()
	}
	return v, m, nil
}

func newView(rec *orchestrator.Record) *MigrationView {
	v := &MigrationView{Record: rec, OwnerPID: orchestrator.OwnerPID(rec.Owner)}
	if json.Valid([]byte(rec.Options)) {
		v.Options = json.RawMessage(rec.Options)
	}
	return v
}

func (s *Server) getMigration(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "migration")
	if err != nil {
		writeError(w, r, err)
		return
	}
	note(r, "migration", id)
	v, _, err := s.view(r.Context(), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// listMigrations serves GET /v1/migrations?vm=&state=&limit=.
func (s *Server) listMigrations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "vm", "state", "limit"); err != nil {
		writeError(w, r, err)
		return
	}
	f := orchestrator.ListFilter{VM: q.Get("vm"), State: q.Get("state"), Limit: 50}
	if f.VM != "" {
		if err := validVM("vm", f.VM); err != nil {
			writeError(w, r, err)
			return
		}
	}
	switch f.State {
	case "", orchestrator.StateRunning, orchestrator.StateCompleted, orchestrator.StateRefused, orchestrator.StateRolledBack,
		orchestrator.StateFailed, orchestrator.StateResumed:
	default:
		writeError(w, r, invalid("state %q: use running, completed, refused, rolled_back, failed or resumed", f.State))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, r, invalid("limit %q: a number from 1 to 1000", l))
			return
		}
		f.Limit = n
	}
	rows, err := s.ctl.Journal.List(r.Context(), f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]*MigrationView, 0, len(rows))
	for _, rec := range rows {
		v := newView(rec)
		if m := s.lookupMove(rec.ID); m != nil {
			m.mu.Lock()
			v.Managed, v.CancelRequested = true, m.cancelRequested
			if !m.isDone() {
				v.Progress = m.progress
			}
			m.mu.Unlock()
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"migrations": out})
}

// onlyParams refuses query parameters other than the allowed ones (a typo
// would otherwise silently widen the query).
func onlyParams(q url.Values, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return invalid("unknown query parameter %q; accepted: %v", k, allowed)
		}
	}
	return nil
}

// CancelAnswer is the answer to DELETE /v1/migrations/{id}.
type CancelAnswer struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Stage   string `json:"stage"`
	Message string `json:"message"`
}

// cancelMigration serves DELETE /v1/migrations/{id}: it cancels a move this
// server runs; the orchestrator then aborts the copy and the VM stays on the
// source. Moves of other processes are theirs to cancel.
func (s *Server) cancelMigration(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "migration")
	if err != nil {
		writeError(w, r, err)
		return
	}
	note(r, "migration", id)
	v, m, err := s.view(r.Context(), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	rec := v.Record
	if m == nil {
		switch {
		case rec.State != orchestrator.StateRunning:
			writeError(w, r, apiErr(http.StatusConflict, "finished", fmt.Sprintf("migration %s already ended: %s", rec.ID, rec.State)))
		case orchestrator.OwnedHere(rec.Owner):
			msg := fmt.Sprintf("migration %s runs in this server as part of a drain: cancel the drain (DELETE /v1/drains/ID?abort=true rolls its moves back)", rec.ID)
			if d := s.drainOf(rec.ID); d != "" {
				msg = fmt.Sprintf("migration %s runs in this server as part of drain %s: DELETE /v1/drains/%s?abort=true rolls its moves back", rec.ID, d, d)
			}
			writeError(w, r, apiErr(http.StatusConflict, "other_process", msg))
		case s.ctl.Journal.OwnerAlive(r.Context(), rec.Owner):
			e := apiErr(http.StatusConflict, "other_process", fmt.Sprintf("migration %s is run by another ferry process (pid %d), not this server: interrupt that process (SIGINT or SIGTERM) to roll it back", rec.ID, v.OwnerPID))
			e.OwnerPID = v.OwnerPID
			writeError(w, r, e)
		default:
			e := apiErr(http.StatusConflict, "other_process", fmt.Sprintf("migration %s was run by ferry pid %d, which is gone: run `ferry recover %s` to finish or roll it back", rec.ID, v.OwnerPID, rec.ID))
			e.OwnerPID = v.OwnerPID
			writeError(w, r, e)
		}
		return
	}
	m.mu.Lock()
	stage, postcopy, state := m.stage, m.postcopy, m.state
	// The journal row ends a moment before Migrate returns.
	done := m.isDone() || rec.State != orchestrator.StateRunning
	if done && state == orchestrator.StateRunning {
		state = rec.State
	}
	if !done && stage < orchestrator.StageCommitment && !postcopy {
		m.cancelRequested = true
	}
	m.mu.Unlock()
	switch {
	case done:
		writeError(w, r, apiErr(http.StatusConflict, "finished", fmt.Sprintf("migration %s already ended: %s", m.id, state)))
		return
	case stage >= orchestrator.StageCommitment:
		writeError(w, r, apiErr(http.StatusConflict, "past_commitment", fmt.Sprintf("migration %s is at %s: the destination is primary and it will complete", m.id, stage)))
		return
	case postcopy:
		writeError(w, r, apiErr(http.StatusConflict, "past_commitment", fmt.Sprintf("migration %s is in post-copy: the guest runs on the destination, which holds its only current state; it will complete", m.id)))
		return
	}
	// The cause ends up in the journal's error: it says who cancelled.
	m.cancel(fmt.Errorf("cancelled by DELETE %s", location(m.id)))
	s.log.WithFields(logrus.Fields{"migration": m.id, "vm": m.vm, "stage": stage.String()}).Info("migration cancel requested over the API")
	writeJSON(w, http.StatusAccepted, CancelAnswer{ID: m.id, State: "cancelling", Stage: stage.String(),
		Message: "cancel requested: the copy is aborted and the VM stays on its source (rolled_back); GET " + location(m.id) + " shows the outcome"})
}
