package api

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// run carries out one move: placement if asked, then the orchestrator.
func (s *Server) run(ctx context.Context, m *move, p *plan) {
	defer s.wg.Done()
	defer m.cancel(nil)
	defer s.recoverMove(m)
	log := s.log.WithFields(logrus.Fields{"migration": m.id, "vm": m.vm, "kind": m.kind})
	if p.auto {
		pl, err := s.ctl.PlaceVM(ctx, m.vm, p.place)
		if err == nil {
			err = orchestrator.PlacementRefusal(pl)
		}
		if err != nil {
			// Journal the refusal like any other (under its own id: the
			// orchestrator never took this move).
			jerr := s.ctl.Refuse(context.WithoutCancel(ctx), orchestrator.Request{Kind: p.req.Kind, VM: m.vm, To: "auto", From: p.req.From}, err)
			if rows, lerr := s.ctl.Journal.List(context.WithoutCancel(ctx), journal.ListFilter{VM: m.vm, State: journal.StateRefused, Limit: 1}); lerr == nil && len(rows) == 1 {
				m.mu.Lock()
				m.refusedAs = rows[0].ID
				m.mu.Unlock()
			}
			log.WithError(err).Info("placement refused the move")
			s.finish(m, nil, journal.StateRefused, jerr)
			return
		}
		m.mu.Lock()
		m.placement = pl
		m.mu.Unlock()
		p.req.To, p.req.From = pl.Host, pl.Source
		log = log.WithField("dst", pl.Host)
		log.WithField("reason", pl.Reason).Info("placement chose a destination")
	}
	log.Info("migration starting")
	req := p.req
	req.ID = m.id
	req.Progress = func(pr orchestrator.Progress) { s.onProgress(m, pr) }
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
	if rec, jerr := s.ctl.Journal.Get(bg, m.id); jerr == nil && rec.State == journal.StateRunning {
		if jerr := s.ctl.Journal.Finish(bg, m.id, journal.StateFailed, err.Error(), nil); jerr != nil {
			log.WithError(jerr).Error("journal")
		}
	}
	if !m.isDone() {
		s.finish(m, nil, journal.StateFailed, err)
	}
}

// onProgress keeps the last snapshot; at the reservation it learns the VM's
// name and UUID from the journal (dedup by either) and lets the POST answer.
func (s *Server) onProgress(m *move, p orchestrator.Progress) {
	m.mu.Lock()
	m.stage, m.progress = p.Stage, &p
	m.postcopy = m.postcopy || p.Postcopy()
	first := !m.learned && p.Stage >= journal.StageReservation
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
func (s *Server) finish(m *move, result *orchestrator.Result, state string, err error) {
	if state == "" {
		state = journal.StateFailed
		if errors.Is(err, orchestrator.ErrRefused) {
			state = journal.StateRefused
		}
	}
	m.mu.Lock()
	if result != nil {
		m.result = result
	}
	m.state, m.err = state, err
	m.mu.Unlock()
	m.end()
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
func (s *Server) openMigration(ctx context.Context, m *move) *journal.Record {
	var cands []*journal.Record
	if rec, err := s.ctl.Journal.Get(ctx, m.id); err == nil && rec.VMUUID != "" {
		if open, err := s.ctl.Journal.OpenForVM(ctx, rec.VMUUID); err == nil && open != nil {
			cands = append(cands, open)
		}
	}
	if rows, err := s.ctl.Journal.List(ctx, journal.ListFilter{VM: m.vm, State: journal.StateRunning, Limit: 5}); err == nil {
		cands = append(cands, rows...)
	}
	for _, rec := range cands {
		if rec.ID != m.id && rec.State == journal.StateRunning && s.ctl.Journal.OwnerAlive(ctx, rec.Owner) {
			return rec
		}
	}
	return nil
}
