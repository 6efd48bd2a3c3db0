package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ferryvm/ferry/journal"
)

func (s *Server) acceptedView(m *move, existing bool) Accepted {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := Accepted{ID: m.id, Location: location(m.id), Existing: existing, State: m.state, Stage: m.stage.String(), Managed: true}
	if res := m.result; res != nil {
		a.Source, a.Dest = res.Source, res.Dest
	}
	if m.placement != nil {
		a.Source, a.Dest = m.placement.Source, m.placement.Host
	}
	return a
}

func (s *Server) recordAccepted(rec *journal.Record) Accepted {
	s.mu.Lock()
	_, managed := s.moves[rec.ID]
	s.mu.Unlock()
	return Accepted{ID: rec.ID, Location: location(rec.ID), Existing: true, State: rec.State, Stage: rec.StageName,
		Managed: managed, OwnerPID: journal.OwnerPID(rec.Owner), Source: rec.Source, Dest: rec.Dest}
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
	if err != nil && (m == nil || !errors.Is(err, journal.ErrNoRecord)) {
		if errors.Is(err, journal.ErrNoRecord) {
			return nil, nil, apiErr(http.StatusNotFound, "unknown_migration", fmt.Sprintf("no migration %q in the journal", id))
		}
		return nil, nil, err
	}
	if rec == nil {
		// Still choosing a destination: no journal row yet.
		rec = &journal.Record{ID: m.id, Kind: m.kind, VM: m.vm, State: journal.StateRunning, StageName: journal.StagePreMigration.String()}
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

func newView(rec *journal.Record) *MigrationView {
	v := &MigrationView{Record: rec, OwnerPID: journal.OwnerPID(rec.Owner)}
	if json.Valid([]byte(rec.Options)) {
		v.Options = json.RawMessage(rec.Options)
	}
	return v
}

// pathView reads the migration id from the path and builds its view; when
// either fails it has answered with the error and returns ok false.
func (s *Server) pathView(w http.ResponseWriter, r *http.Request) (v *MigrationView, m *move, ok bool) {
	id, err := pathID(r, "migration")
	if err != nil {
		writeError(w, r, err)
		return nil, nil, false
	}
	note(r, "migration", id)
	v, m, err = s.view(r.Context(), id)
	if err != nil {
		writeError(w, r, err)
		return nil, nil, false
	}
	return v, m, true
}

func (s *Server) getMigration(w http.ResponseWriter, r *http.Request) {
	if v, _, ok := s.pathView(w, r); ok {
		writeJSON(w, http.StatusOK, v)
	}
}

// listMigrations serves GET /v1/migrations?vm=&state=&limit=.
func (s *Server) listMigrations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "vm", "state", "limit"); err != nil {
		writeError(w, r, err)
		return
	}
	f := journal.ListFilter{VM: q.Get("vm"), State: q.Get("state"), Limit: 50}
	if f.VM != "" {
		if err := validVM("vm", f.VM); err != nil {
			writeError(w, r, err)
			return
		}
	}
	switch f.State {
	case "", journal.StateRunning, journal.StateCompleted, journal.StateRefused, journal.StateRolledBack,
		journal.StateFailed, journal.StateResumed:
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
