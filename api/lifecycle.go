package api

import "sync"

// lifecycle is what the handlers of a background job (a move or a drain)
// wait on and look at: accepted closes once the job may be answered for (a
// move holds its reservation, a drain reported its first snapshot) or has
// ended, which is when the POST answers; done closes when the job has ended.
type lifecycle struct {
	accepted   chan struct{}
	acceptOnce sync.Once
	done       chan struct{}
}

func newLifecycle() lifecycle {
	return lifecycle{accepted: make(chan struct{}), done: make(chan struct{})}
}

// accept lets the POST answer; it is safe to call more than once.
func (l *lifecycle) accept() { l.acceptOnce.Do(func() { close(l.accepted) }) }

// end marks the job ended, and accepted too, so that a POST still waiting
// answers with the outcome. It is called once, when the job's goroutine ends.
func (l *lifecycle) end() {
	close(l.done)
	l.accept()
}

func (l *lifecycle) isDone() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}
