package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/google/uuid"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
)

// move is a migration this server runs. Its lifecycle's accepted closes once
// the move holds its reservation, or ended: then the POST answers.
type move struct {
	lifecycle
	id     string
	vm     string // as requested: a name or a UUID
	kind   string // live or cold
	cancel context.CancelCauseFunc

	mu              sync.Mutex
	stage           journal.Stage
	learned         bool
	progress        *orchestrator.Progress
	postcopy        bool
	placement       *placement.Placement
	result          *orchestrator.Result
	state           string
	err             error
	cancelRequested bool
	// refusedAs is the journal row of a refusal that happened before the
	// orchestrator took the move (placement found no host).
	refusedAs string
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
	*journal.Record
	// Options shadows the row's options text with the JSON object it holds.
	Options         json.RawMessage        `json:"options,omitempty"`
	OwnerPID        int                    `json:"owner_pid,omitempty"`
	Managed         bool                   `json:"managed"`
	CancelRequested bool                   `json:"cancel_requested,omitempty"`
	Progress        *orchestrator.Progress `json:"progress,omitempty"`
	Placement       *placement.Placement   `json:"placement,omitempty"`
	Result          *orchestrator.Result   `json:"result,omitempty"`
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
	m := &move{lifecycle: newLifecycle(), id: uuid.NewString(), vm: body.VM, kind: kind, state: journal.StateRunning}
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
