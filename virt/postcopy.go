package virt

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// Post-copy recovery through the source's QEMU monitor.
//
// libvirt 11.3's own recovery (virDomainMigrate* with VIR_MIGRATE_POSTCOPY_RESUME,
// peer-to-peer or not) makes the destination libvirtd segfault: its prepare-resume
// step hands qemuProcessIncomingDefNew a NULL fd pointer, which it dereferences
// (seen in the lab with gdb: SIGSEGV at qemuProcessIncomingDefNew+137, reading the
// 5th argument, called from qemuMigrationDstPrepareDirect). The destination's
// monitor is out of reach too: its "migration in" job admits no query jobs, so
// virDomainQemuMonitorCommand there times out on the state change lock, and QMP
// migrate-recover cannot be sent. What works: the destination QEMU keeps listening
// on its incoming address after the stream breaks, and QEMU accepts a new
// connection there as the recovery channel. So ferry sends `migrate` with
// resume=true to the source QEMU (whose outgoing job does admit monitor commands)
// at that address; once QEMU reports completion, both libvirtds finish the
// unattended job themselves (source shut off "migrated", destination running).
// That needs the incoming port to be known: ferry picks it (PostcopyDataURI).

// MigrationStatus is QEMU's own view of a domain's outgoing migration (QMP
// query-migrate): libvirt reports a paused post-copy only as the domain state
// "post-copy failed", which a broken link and a dead destination share.
type MigrationStatus struct {
	// Status as QEMU names it: active, postcopy-active, postcopy-paused,
	// postcopy-recover, completed, failed, cancelled, ...
	Status    string
	ErrorDesc string
	// RemainingBytes is the memory not yet on the destination.
	RemainingBytes uint64
	// TransferredBytes grows while the copy moves.
	TransferredBytes uint64
}

// QEMU migration states ferry acts on.
const (
	MigPostcopyActive  = "postcopy-active"
	MigPostcopyPaused  = "postcopy-paused"
	MigPostcopyRecover = "postcopy-recover"
	// MigPostcopyRecoverSetup: QEMU ≥ 9.1, reconnecting (before postcopy-recover).
	MigPostcopyRecoverSetup = "postcopy-recover-setup"
	MigCompleted            = "completed"
	MigFailed               = "failed"
)

type queryMigrateReply struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	RAM       *struct {
		Remaining   uint64 `json:"remaining"`
		Transferred uint64 `json:"transferred"`
	} `json:"ram"`
}

// MigrationStatus asks the domain's QEMU how its migration stands.
func (d *domain) MigrationStatus() (MigrationStatus, error) {
	var r queryMigrateReply
	if err := runQMP(monitor{d: d.d}, "query-migrate", nil, &r); err != nil {
		return MigrationStatus{}, err
	}
	s := MigrationStatus{Status: r.Status, ErrorDesc: r.ErrorDesc}
	if r.RAM != nil {
		s.RemainingBytes, s.TransferredBytes = r.RAM.Remaining, r.RAM.Transferred
	}
	return s, nil
}

// ResumePostcopy reconnects a paused post-copy migration (QEMU state
// postcopy-paused) to dataURI, the destination's incoming address with its
// port (tcp://host:port).
func (d *domain) ResumePostcopy(dataURI string) error {
	qemuURI, err := QEMUMigrateURI(dataURI)
	if err != nil {
		return err
	}
	return runQMP(monitor{d: d.d}, "migrate", map[string]any{"uri": qemuURI, "resume": true}, nil)
}

// PausePostcopy kicks a reconnection that hangs (its new stream broke during
// the handshake) back to postcopy-paused (QMP migrate-pause), so it can be
// resumed again.
func (d *domain) PausePostcopy() error {
	err := runQMP(monitor{d: d.d}, "migrate-pause", nil, nil)
	if err == nil {
		return nil
	}
	// QEMU refuses migrate-pause in postcopy-recover-setup; yank shuts the
	// migration channels down whatever state they are in.
	if yerr := runQMP(monitor{d: d.d}, "yank", map[string]any{"instances": []map[string]any{{"type": "migration"}}}, nil); yerr != nil {
		return fmt.Errorf("%w; yank: %w", err, yerr)
	}
	return nil
}

// QEMUMigrateURI turns libvirt's data URI form tcp://host:port into QEMU's
// tcp:host:port; a port is required (QEMU has no default).
func QEMUMigrateURI(dataURI string) (string, error) {
	u, err := url.Parse(dataURI)
	bad := func(why string) error {
		return &Error{Op: "post-copy resume", Sentinel: ErrBadURI, Message: fmt.Sprintf("data URI %q: %s (want tcp://host:port)", dataURI, why)}
	}
	if err != nil {
		return "", bad(err.Error())
	}
	if u.Scheme != "tcp" {
		return "", bad("scheme is not tcp")
	}
	if u.Hostname() == "" {
		return "", bad("no host")
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil || p <= 0 || p > 65535 {
		return "", bad("no valid port")
	}
	return "tcp:" + net.JoinHostPort(u.Hostname(), u.Port()), nil
}
