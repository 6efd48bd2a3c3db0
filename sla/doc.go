// Package sla keeps ferry's SLA event log and turns it into availability
// figures against the 99.95 % target (21.6 min per 30 days).
//
// # Events
//
// The log (table sla_events) is append-only: a correction is a new event.
// Each event carries a dedup key; delivering the same key again is a no-op.
// An event without a key gets DefaultDedupKey, a hash of (kind, host, VM,
// source, observed_at), so a monitor that re-sends an observation is
// harmless. Every rule reads ObservedAt, never ReceivedAt, and events are
// sorted before use, so out-of-order delivery gives the same report.
//
//	Kind                 Source              Emitted when
//	PS_Timeout           poller              a poll of the host times out (every 20 s by default)
//	PS_Unreachable       poller              the third consecutive timeout
//	PS_Reachable         poller              the first successful poll after PS_Unreachable
//	VM_Unreachable       libvirt-events      the agent lost its connection to the VM's host
//	VM_Failure           libvirt-events      the VM failed (see the lifecycle table), or its host stayed unreachable
//	VM_Reachable         libvirt-events      the VM is running and seen again (also on reconnect, per running domain)
//	VM_Stopped           libvirt-events      the owner stopped or paused the VM: not eligible time
//	VM_Started           libvirt-events      the owner started or resumed it
//	Monitor_Blind        libvirt-events      the agent lost its libvirt connection (blind interval starts)
//	Monitor_Sight        libvirt-events      the agent reconnected (blind interval ends)
//	Migration_Planned    ferry-orchestrator  a migration was planned (correlation_id = migration id)
//	Migration_Switchover ferry-orchestrator  switchover began; payload postcopy=true for post-copy
//	Migration_Completed  ferry-orchestrator  done; host = destination; payload downtime_ms (0 for cold)
//	Migration_Failed     ferry-orchestrator  failed; payload postcopy=true if it failed in post-copy
//	Migration_RolledBack ferry-orchestrator  rolled back; the VM stays on the source
//
// Sources are "poller", "libvirt-events", "ferry-orchestrator", "manual" and
// "import:<name>" (Log.Import). Migration events need a correlation id and a
// VM; poller and Monitor_* events need a host; VM_* events need a VM name or
// UUID. Event.Validate names every wrong field.
//
// The monitoring agent maps libvirt lifecycle events with LifecycleKind:
//
//	libvirt event / detail                         Kind
//	started / booted, restored, from-snapshot, wakeup   VM_Started
//	started / migrated, recreated                  VM_Reachable
//	resumed / unpaused                             VM_Started
//	resumed / migrated, postcopy                   VM_Reachable
//	resumed / postcopy-failed                      VM_Failure (postcopy)
//	suspended / paused, guest-shutdown             VM_Stopped
//	suspended / ioerror, watchdog, api-error       VM_Failure
//	suspended / postcopy-failed                    VM_Failure (postcopy)
//	suspended / migrated, postcopy, restored       nothing (pause charged from downtime_ms)
//	stopped / shutdown, destroyed, saved           VM_Stopped
//	stopped / crashed, failed                      VM_Failure
//	stopped / migrated, recreated                  nothing
//	crashed / *                                    VM_Failure
//	pmsuspended / *                                VM_Stopped
//	shutdown, defined, undefined / *               nothing
//	connection closed (error, eof, keepalive)      Monitor_Blind + VM_Unreachable per VM (ConnectionClosedKinds)
//
// Failures are a crash, an emulator failure (stopped/failed: QEMU died
// without shutting down, e.g. killed), a failed post-copy and an I/O-error
// pause. stopped/destroyed is deliberately owner-stopped, not a failure
// (issue 5 lists "destroyed" among failures): libvirt reports it only for
// an explicit virDomainDestroy (virsh destroy, a cloud's force-stop), which
// is the owner powering the VM off, and a QEMU that dies on its own is
// reported as stopped/failed or crashed. A VM_Started of a VM whose last
// recorded event is VM_Failure is recorded as VM_Reachable: the recovery.
//
// Lifecycle events the agent can tie to a running migration (a
// Migration_Planned or Migration_Switchover in the log for that VM, not ended
// more than MigrationGrace before) carry its correlation id, so the rules
// treat them as part of the migration.
//
// On every (re)connection the agent re-reads each domain's state and maps it
// with StateKind: running → VM_Reachable (always, so the report can place
// the VM), shutoff/crashed, shutoff/failed, crashed, paused/ioerror... →
// VM_Failure, shutoff/destroyed, shutoff/shutdown, paused/user → VM_Stopped;
// states other than running are recorded only when they differ from the
// VM's last recorded event, so what happened while the agent was blind (or
// not running) is recorded once. Stopping the agent records Monitor_Blind
// ("monitor stopped"); the next start records Monitor_Sight.
//
// # Agents
//
// Poller (poller.go) probes hosts through the Prober interface (LibvirtProbe
// keeps one connection per host and calls Capacity, at most one call in
// flight per host, so a SIGSTOPped libvirtd yields timeouts, not a pile of
// blocked calls); its PS_Timeout rows carry payload {"consecutive": n}.
// Agent (agent.go) is the monitoring agent; Monitor (monitor.go) runs both,
// follows the log for events other processes write and keeps Metrics
// (metrics.go, Prometheus) current.
//
// # Correlation rules (Compute)
//
// Which host a VM is on at time t: the host of the last event before t that
// names both the VM and a host. While a migration is known (its correlation
// id appears on a Migration_* event of that VM), its lifecycle events do not
// move the VM; Migration_Completed moves it to payload destination, or else
// to the event's host. A VM is placed only from its first such event on, so
// the agent emits VM_Reachable for every running domain when it connects.
//
//  1. Host failure (seed Figures 8.10–8.11): a VM is down from its
//     VM_Failure until its next VM_Reachable (or VM_Started; VM_Stopped ends
//     it too, the owner having stopped the VM): t6 − t2. VM_Unreachable alone
//     is never downtime.
//  2. Network failure seen by the poller (Figures 8.8–8.9): every VM on the
//     host is down from PS_Unreachable (t2) to PS_Reachable (t4). Options.Backdate
//     starts it at the first PS_Timeout of the sequence (timeouts at most two
//     poll intervals apart; a PS_Timeout with payload consecutive=1, as the
//     poller writes after a successful poll, starts a new sequence). Both
//     bounds are in every report
//     (Interval.Unreachable/FirstTimeout, Entry.DowntimeLow/High).
//  3. False positives: a PS_Timeout run that never reaches PS_Unreachable is
//     no outage (shown as info). A poller outage during which a live hypervisor
//     event for the same host is observed — VM_Reachable, VM_Started,
//     VM_Stopped, Monitor_Sight, Migration_Switchover or Migration_Completed
//     from any source but the poller, after PS_Unreachable and before the last
//     two poll intervals preceding PS_Reachable (where the agent merely saw
//     the recovery first) — is a monitoring partition: reported, not charged.
//  4. Migration: VM_Failure, VM_Stopped and VM_Started of a known migration
//     are not failures or stops. The switchover pause of Migration_Completed
//     (downtime_ms, ending at its observed time) is downtime when
//     Options.ChargeMigrationPause (DefaultOptions sets it), else info. A
//     failed post-copy is a failure: from Migration_Failed with
//     postcopy=true (or after a post-copy switchover), or from a VM_Failure
//     with postcopy=true or observed during the post-copy phase, until the
//     VM is reachable again.
//  5. Intervals are merged (union), never double counted: the host-failure
//     poller interval t3..t5 lies inside t2..t6 and adds nothing.
//  6. Eligible time is the window minus maintenance declared in advance
//     (DeclaredAt ≤ From; host windows cover the VMs on the host at the time)
//     and minus owner-stopped time (VM_Stopped → VM_Started/VM_Reachable).
//     Excluded time is removed from downtime too. A window declared after its
//     start is listed (maintenance-late) and excluded from nothing.
//  7. An interval without its closing event runs to the report's end,
//     min(period end, now). Events observed before the period carry the
//     state it starts in.
//  8. Monitor_Blind → Monitor_Sight is listed as info: failures inside it
//     could not be seen by the agent, only by the poller.
//
// Host figures: a host is down while the poller says it is unreachable and
// that is not contradicted (rule 2 and 3, with the same Backdate policy). VM
// failures do not make the host down: a crashed guest is not a host outage,
// and a failed host is caught by its poller. Host entries also list the
// false-positive timeout runs, partitions, blind intervals and maintenance.
//
// Figures per entry: Eligible = window − ∪excluded; Charged = ∪downtime −
// ∪excluded and Downtime is its total; Availability = 100·(1 − Downtime /
// Eligible), 100 when nothing was eligible; Budget = Eligible·(100 − Target)/100,
// BudgetLeft = Budget − Downtime; Met when Downtime ≤ Budget. Every entry
// lists its intervals (start, end, class, rule, cause, event ids), clipped to
// the window, so each figure can be rechecked.
//
// # Store
//
// NewLog creates sla_events (indexed on vm_name, host, observed_at) and
// sla_maintenance in ferry's state database (package store). Times are Unix
// nanoseconds; SQL is kept portable to PostgreSQL. Append and Import insert
// in one transaction with batched prepared statements: all or nothing.
package sla
