package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/units"
	"github.com/ferryvm/ferry/virt"
)

// Live moves (DESIGN.md §2): the six stages over libvirt. The pre-flight
// is common (move.go); this file holds what only a live move does before
// its run (run.go): a running VM, its memory reserved, the pre-copy planned.

// Timing of the pre-copy monitor and of connections.
const (
	// sampleIntervalMS matches DESIGN.md §2: job stats every 250 ms.
	sampleIntervalMS = 250
	// journalIntervalMS bounds how often progress is written to the journal.
	journalIntervalMS = 1000
	// DefaultMaxDowntime is QEMU's own default downtime limit.
	DefaultMaxDowntime = 300 * time.Millisecond
)

type liveOps struct{ *move }

func (m liveOps) options() map[string]any {
	r, l := m.req, m.req.Live
	return map[string]any{
		"max_downtime_ms": l.MaxDowntime.Milliseconds(), "bandwidth_mibps": r.BandwidthMiBps,
		"timeout_ms": l.Timeout.Milliseconds(), "copy_storage": l.CopyStorage,
		"max_downtime_ceiling_ms": l.DowntimeCeiling.Milliseconds(), "allow_postcopy": l.AllowPostcopy,
		"completion_timeout_ms": l.CompletionTimeout.Milliseconds(), "on_timeout": l.OnTimeout,
	}
}

func (m liveOps) checkSource() error {
	if m.info.State != virt.StateRunning {
		return m.check("vm-running", refuse(ErrNotRunning, nil, "VM %s is %s on %s: live migration needs a running VM (start it, or move it with --cold)", m.info.Name, m.info.State, m.src.Name), "")
	}
	_ = m.check("vm-running", nil, fmt.Sprintf("%s is running on %s", m.info.Name, m.src.Name))
	var err error
	if m.spec, err = m.dom.Spec(); err != nil {
		return refuse(ErrUnreachable, err, "reading VM %s's definition on %s: %v", m.info.Name, m.src.Name, err)
	}
	return nil
}

func (m liveOps) claim(ctx context.Context) error {
	_, err := m.c.Journal.Claim(ctx, m.rec.ID, m.info.UUID, map[string]any{"vm_name": m.info.Name,
		"src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI}, nil)
	return claimRefusal(err)
}

func (m liveOps) beforeDestination(context.Context) error { return nil }

func (m liveOps) needs() placement.VMNeeds {
	return placement.VMNeeds{Name: m.info.Name, MemoryBytes: m.info.MemoryBytes, VCPUs: m.info.VCPUs}
}

// reserve holds a move slot and the VM's memory on the destination, then
// measures the guest and plans the pre-copy.
func (m liveOps) reserve(ctx context.Context) error {
	c := m.c
	if err := m.chooseTLS(); err != nil {
		return err
	}
	if !m.req.DryRun {
		if err := m.acquireSlot(ctx); err != nil {
			return m.check(placement.RuleBusy, err, "")
		}
		need, avail := m.info.MemoryBytes, sub(m.dstFree, m.dst.ReservedBytes())
		if err := c.Journal.Reserve(ctx, m.rec.ID, m.dstID.UUID, m.dst.Name, need, avail); err != nil {
			var nr *journal.NoRoomError
			if errors.As(err, &nr) {
				err = refuse(ErrInsufficientMemory, err, "not enough free memory on %s: the VM needs %s, %s is available after the host reserve and %s held by migrations in flight",
					m.dst.Name, units.MiB(need), units.MiB(nr.Left()), units.MiB(nr.Held))
			}
			return m.check(placement.RuleMemory, err, "")
		}
	}
	if len(m.spec.Disks) > 0 && !m.req.Live.CopyStorage {
		_ = m.check("storage", nil, fmt.Sprintf("%d disk(s) assumed on shared storage (use --copy-storage for host-local disks)", len(m.spec.Disks)))
	}
	if !m.req.DryRun {
		if err := c.Journal.EnterStage(ctx, m.rec.ID, journal.StageReservation, c.now(), nil); err != nil {
			return err
		}
	}
	m.progress(Progress{Stage: journal.StageReservation, Message: fmt.Sprintf("%s reserved on %s", units.MiB(m.info.MemoryBytes), m.dst.Name)})
	plan, err := m.plan(ctx)
	if err != nil {
		return err
	}
	m.res.Live.Plan, m.res.Live.Strategy = plan, string(plan.Strategy)
	return nil
}

func (m liveOps) run(ctx context.Context) (*Result, error) { return m.runLive(ctx, m.res.Live.Plan) }

func sub(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// chooseTLS decides whether the migration streams are encrypted.
func (m liveOps) chooseTLS() error {
	var so, do tlsOffer
	if m.src.TLSPolicy() != inventory.TLSOff && m.dst.TLSPolicy() != inventory.TLSOff {
		so, do = probeTLS(m.srcConn, m.src.TLSDir()), probeTLS(m.dstConn, m.dst.TLSDir())
	}
	addr := m.dst.MigrationAddress
	if addr == "" {
		addr = virt.URIHost(m.dst.URI)
	}
	ch := decideTLS(m.src, m.dst, so, do, loopbackAddr(addr))
	if ch.Refuse != "" {
		return m.check("migration-tls", refuse(ErrMigrationTLS, nil, "%s", ch.Refuse), "")
	}
	_ = m.check("migration-tls", nil, ch.Detail)
	m.res.Live.MigrationTLS = ch.Use
	if ch.Clear {
		m.res.Live.Warnings = append(m.res.Live.Warnings, ch.Detail)
	}
	return nil
}
