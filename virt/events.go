package virt

import (
	"context"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
)

// subscriber queues events without bound so a slow consumer (the SLA store
// writing to disk) never makes libvirt's event loop drop or block.
type subscriber struct {
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once
	out   chan Event
}

func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) close() { s.once.Do(func() { close(s.done) }) }

func (s *subscriber) run() {
	defer close(s.out)
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, ev := range batch {
			select {
			case s.out <- ev:
			case <-s.done:
				return
			}
		}
		if len(batch) > 0 && batch[len(batch)-1].Kind == EventClosed {
			return
		}
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
	}
}

func (h *host) Subscribe(ctx context.Context) (<-chan Event, error) {
	s := &subscriber{wake: make(chan struct{}, 1), done: make(chan struct{}), out: make(chan Event)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, &Error{Op: "subscribe to " + h.uri, Sentinel: ErrUnreachable, Message: "connection closed"}
	}
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	if len(h.callbacks) == 0 {
		if err := h.registerLocked(); err != nil {
			h.mu.Unlock()
			return nil, err
		}
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	go s.run()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
		s.close()
	}()
	return s.out, nil
}

func (h *host) registerLocked() error {
	lc, err := h.c.DomainEventLifecycleRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, e *libvirt.DomainEventLifecycle) {
		ev := h.domainEvent(EventLifecycle, d)
		ev.Lifecycle, ev.Detail = lifecycleNames[e.Event], lifecycleDetail(e.Event, e.Detail)
		h.dispatch(ev)
	})
	if err != nil {
		return wrap("register lifecycle events on "+h.uri, err)
	}
	h.callbacks = append(h.callbacks, lc)
	it, err := h.c.DomainEventMigrationIterationRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, e *libvirt.DomainEventMigrationIteration) {
		ev := h.domainEvent(EventIteration, d)
		ev.Iteration = e.Iteration
		h.dispatch(ev)
	})
	if err == nil {
		h.callbacks = append(h.callbacks, it)
	}
	jc, err := h.c.DomainEventJobCompletedRegister(nil, func(_ *libvirt.Connect, d *libvirt.Domain, e *libvirt.DomainEventJobCompleted) {
		ev := h.domainEvent(EventJobCompleted, d)
		js := convertJob(&e.Info)
		ev.Job = &js
		h.dispatch(ev)
	})
	if err == nil {
		h.callbacks = append(h.callbacks, jc)
	}
	return nil
}

func (h *host) domainEvent(kind EventKind, d *libvirt.Domain) Event {
	ev := Event{Kind: kind, At: time.Now(), Host: h.uri}
	ev.Domain, _ = d.GetName()
	ev.UUID, _ = d.GetUUIDString()
	return ev
}

func (h *host) dispatch(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.push(ev)
	}
}

var closeReasons = map[libvirt.ConnectCloseReason]string{
	libvirt.CONNECT_CLOSE_REASON_ERROR:     "error",
	libvirt.CONNECT_CLOSE_REASON_EOF:       "eof",
	libvirt.CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive",
	libvirt.CONNECT_CLOSE_REASON_CLIENT:    "client",
}

func (h *host) onClose(_ *libvirt.Connect, reason libvirt.ConnectCloseReason) {
	h.dispatch(Event{Kind: EventClosed, At: time.Now(), Host: h.uri, Reason: closeReasons[reason]})
}
