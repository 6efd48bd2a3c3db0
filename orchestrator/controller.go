package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// DefaultDialTimeout bounds connecting to a host during checks.
const DefaultDialTimeout = 10 * time.Second

// DialFunc opens a connection to a host; virt.Dial in production.
type DialFunc func(ctx context.Context, uri string) (virt.Host, error)

// EventSink receives migration events for the SLA log (nil: none).
type EventSink interface {
	MigrationEvent(ctx context.Context, ev MigrationEvent) error
}

// MigrationEvent is what the orchestrator tells the SLA log.
type MigrationEvent struct {
	Kind        string // planned, switchover, completed, failed, rolled_back
	MigrationID string
	VM, VMUUID  string
	Source      string
	Dest        string
	At          time.Time
	Downtime    time.Duration
	Postcopy    bool
	Detail      string
}

// Controller runs migrations. Its fields are set by the caller; zero values
// of the optional ones are fine.
type Controller struct {
	Inventory   *inventory.Inventory
	Journal     *journal.Journal
	Dial        DialFunc
	Log         *logrus.Entry
	Clock       func() time.Time // nil: time.Now
	HooksDir    string
	HookTimeout time.Duration
	Events      EventSink
	DialTimeout time.Duration
	// Limits bound concurrent moves per host for every migration this
	// controller starts (a request's own non-zero limits win).
	Limits inventory.Limits
}

// Now is the controller's clock.
func (c *Controller) Now() time.Time {
	if c.Clock != nil {
		return c.Clock()
	}
	return time.Now()
}

func (c *Controller) now() time.Time { return c.Now() }

// Logger is the controller's log entry.
func (c *Controller) Logger() *logrus.Entry { return c.log() }

func (c *Controller) log() *logrus.Entry {
	if c.Log != nil {
		return c.Log
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

// DialHost connects to an inventory host within the dial timeout; a host
// that does not answer is a refusal wrapping ErrUnreachable.
func (c *Controller) DialHost(ctx context.Context, h inventory.Host) (virt.Host, error) {
	return c.dial(ctx, h)
}

func (c *Controller) dial(ctx context.Context, h inventory.Host) (virt.Host, error) {
	t := c.DialTimeout
	if t == 0 {
		t = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		dial = virt.Dial
	}
	conn, err := dial(dctx, h.URI)
	if err != nil {
		if errors.Is(err, virt.ErrBadURI) {
			return nil, refuse(ErrInvalidRequest, err, "host %s: %v", h.Name, err)
		}
		return nil, refuse(ErrUnreachable, err, "host %s (%s) is unreachable: %v", h.Name, h.URI, err)
	}
	return conn, nil
}

// Refuse journals a request rejected before it reached Migrate (a malformed
// flag, say), so every refusal leaves a row with its reason.
func (c *Controller) Refuse(ctx context.Context, req Request, reason error) error {
	err := refuse(ErrInvalidRequest, reason, "%v", reason)
	req = req.withDefaults()
	rec := &journal.Record{ID: uuid.NewString(), Kind: req.Kind, VM: req.VM, Dest: req.To, Source: req.From, State: journal.StateRunning, Owner: journal.OwnerToken()}
	if jerr := c.Journal.Create(ctx, rec); jerr != nil {
		return errors.Join(err, jerr)
	}
	if jerr := c.Journal.Finish(ctx, rec.ID, journal.StateRefused, err.Error(), nil); jerr != nil {
		return errors.Join(err, jerr)
	}
	return err
}
