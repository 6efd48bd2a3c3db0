package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/journal"
)

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
	v, m, ok := s.pathView(w, r)
	if !ok {
		return
	}
	rec := v.Record
	if m == nil {
		writeError(w, r, s.notRunHere(r.Context(), v))
		return
	}
	m.mu.Lock()
	stage, postcopy, state := m.stage, m.postcopy, m.state
	// The journal row ends a moment before Migrate returns.
	done := m.isDone() || rec.State != journal.StateRunning
	if done && state == journal.StateRunning {
		state = rec.State
	}
	if !done && stage < journal.StageCommitment && !postcopy {
		m.cancelRequested = true
	}
	m.mu.Unlock()
	switch {
	case done:
		writeError(w, r, apiErr(http.StatusConflict, "finished", fmt.Sprintf("migration %s already ended: %s", m.id, state)))
		return
	case stage >= journal.StageCommitment:
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

// notRunHere is the refusal to cancel a migration this server does not run
// itself: it ended, a drain of this server runs it, or another ferry process
// (alive or gone) does; each answer says who can stop it.
func (s *Server) notRunHere(ctx context.Context, v *MigrationView) *Error {
	rec := v.Record
	switch {
	case rec.State != journal.StateRunning:
		return apiErr(http.StatusConflict, "finished", fmt.Sprintf("migration %s already ended: %s", rec.ID, rec.State))
	case journal.OwnedHere(rec.Owner):
		msg := fmt.Sprintf("migration %s runs in this server as part of a drain: cancel the drain (DELETE /v1/drains/ID?abort=true rolls its moves back)", rec.ID)
		if d := s.drainOf(rec.ID); d != "" {
			msg = fmt.Sprintf("migration %s runs in this server as part of drain %s: DELETE /v1/drains/%s?abort=true rolls its moves back", rec.ID, d, d)
		}
		return apiErr(http.StatusConflict, "other_process", msg)
	}
	var e *Error
	if s.ctl.Journal.OwnerAlive(ctx, rec.Owner) {
		e = apiErr(http.StatusConflict, "other_process", fmt.Sprintf("migration %s is run by another ferry process (pid %d), not this server: interrupt that process (SIGINT or SIGTERM) to roll it back", rec.ID, v.OwnerPID))
	} else {
		e = apiErr(http.StatusConflict, "other_process", fmt.Sprintf("migration %s was run by ferry pid %d, which is gone: run `ferry recover %s` to finish or roll it back", rec.ID, v.OwnerPID, rec.ID))
	}
	e.OwnerPID = v.OwnerPID
	return e
}
