package coldmove

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Step is one named, undoable action of a move (after firecracker-go-sdk's
// handler lists): Do runs forward; Undo, if set, reverses a Do that succeeded.
type Step struct {
	Name string
	Do   func(ctx context.Context) error
	Undo func(ctx context.Context) error
	// UndoOnFailure: a failed Do may have left something behind (a partial
	// copy), so its Undo runs too, first.
	UndoOnFailure bool
}

// StepEvent reports a step's progress to an observer.
type StepEvent struct {
	Step    string
	Phase   string // do, done, failed, undo, undone, undo-failed
	Err     error
	Elapsed time.Duration
}

// RollbackError is returned when a step failed (or ctx ended) and the steps
// done before it were undone in reverse order.
type RollbackError struct {
	Step       string  // the step that failed
	Cause      error   // why
	UndoErrors []error // undo steps that failed; empty when the rollback is complete
}

func (e *RollbackError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Step, e.Cause)
	if len(e.UndoErrors) > 0 {
		var s []string
		for _, u := range e.UndoErrors {
			s = append(s, u.Error())
		}
		msg += "; rollback incomplete: " + strings.Join(s, "; ")
	}
	return msg
}

func (e *RollbackError) Unwrap() []error { return append([]error{e.Cause}, e.UndoErrors...) }

// Complete reports whether every undo succeeded.
func (e *RollbackError) Complete() bool { return len(e.UndoErrors) == 0 }

// RunSteps runs the steps' Do in order. When one fails, or ctx ends between
// two steps, it runs the Undo of every step already done, last first, with a
// context that is no longer cancelled, and returns a *RollbackError.
func RunSteps(ctx context.Context, steps []Step, observe func(StepEvent)) error {
	if observe == nil {
		observe = func(StepEvent) {}
	}
	var done []Step
	for _, s := range steps {
		var err error
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("cancelled before it started: %w", context.Cause(ctx))
		} else {
			t := time.Now()
			observe(StepEvent{Step: s.Name, Phase: "do"})
			err = s.Do(ctx)
			if err == nil && ctx.Err() != nil {
				// The step finished, but the caller gave up meanwhile: keep
				// it in the list so that it is undone too.
				done = append(done, s)
				err = fmt.Errorf("cancelled: %w", context.Cause(ctx))
			}
			if err == nil {
				observe(StepEvent{Step: s.Name, Phase: "done", Elapsed: time.Since(t)})
				done = append(done, s)
				continue
			}
		}
		observe(StepEvent{Step: s.Name, Phase: "failed", Err: err})
		rb := &RollbackError{Step: s.Name, Cause: err}
		if s.UndoOnFailure && (len(done) == 0 || done[len(done)-1].Name != s.Name) {
			done = append(done, s)
		}
		bg := context.WithoutCancel(ctx)
		for i := len(done) - 1; i >= 0; i-- {
			u := done[i]
			if u.Undo == nil {
				continue
			}
			t := time.Now()
			observe(StepEvent{Step: u.Name, Phase: "undo"})
			if uerr := u.Undo(bg); uerr != nil {
				rb.UndoErrors = append(rb.UndoErrors, fmt.Errorf("undo %s: %w", u.Name, uerr))
				observe(StepEvent{Step: u.Name, Phase: "undo-failed", Err: uerr, Elapsed: time.Since(t)})
				continue
			}
			observe(StepEvent{Step: u.Name, Phase: "undone", Elapsed: time.Since(t)})
		}
		return rb
	}
	return nil
}

// IsRollback reports whether err is a *RollbackError, and returns it.
func IsRollback(err error) (*RollbackError, bool) {
	var rb *RollbackError
	ok := errors.As(err, &rb)
	return rb, ok
}
