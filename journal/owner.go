package journal

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An owner token names the ferry process that runs a journal row or a drain,
// in a way that holds across machines sharing the state and that PID reuse
// cannot fake: "v2:MACHINE:BOOT:PID:START" (machine id, boot id, PID and the
// process's start time). Rows written by older ferry versions hold "PID:START".
//
// On the owner's own machine (same machine id) liveness is read from /proc,
// which is authoritative: another boot, or no process with that PID and start
// time, means dead. From another machine it cannot be, so the owner also
// holds a lease in the state database that it renews while it runs; a lease
// older than leaseTTL means dead.
const (
	// leaseRenew is how often a running ferry process renews its lease.
	leaseRenew = 10 * time.Second
	// leaseTTL is how long a lease is trusted after its last renewal: longer
	// than a renewal waiting out the journal's 30 s busy timeout plus an
	// interval, with room for clock skew between machines.
	leaseTTL = 60 * time.Second
	// leaseKeep is how long finished processes' leases are kept before the
	// renewer deletes them.
	leaseKeep = 24 * time.Hour
)

// ownerID is a parsed owner token.
type ownerID struct {
	Machine, Boot string // empty in tokens of older versions: local-only
	PID           int
	Start         string
}

func (o ownerID) token() string {
	return fmt.Sprintf("v2:%s:%s:%d:%s", o.Machine, o.Boot, o.PID, o.Start)
}

func parseOwner(tok string) (ownerID, bool) {
	f := strings.Split(tok, ":")
	switch {
	case len(f) == 5 && f[0] == "v2":
		pid, err := strconv.Atoi(f[3])
		if err != nil || pid <= 0 || f[1] == "" {
			return ownerID{}, false
		}
		return ownerID{Machine: f[1], Boot: f[2], PID: pid, Start: f[4]}, true
	case len(f) == 2:
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 0 {
			return ownerID{}, false
		}
		return ownerID{PID: pid, Start: f[1]}, true
	}
	return ownerID{}, false
}

// hostView is what this process knows of its own machine.
type hostView struct {
	Machine, Boot string
	// ProcStart returns a local PID's start time ("" if there is no such process).
	ProcStart func(pid int) string
}

// ownerLive decides whether an owner still runs. lease is the owner's last
// renewal (zero: none recorded). It is pure: every case is table-tested.
func ownerLive(o ownerID, here hostView, lease, now time.Time) bool {
	if o.Machine == "" || o.Machine == here.Machine {
		if o.Machine != "" && o.Boot != here.Boot {
			return false // the machine rebooted since: the process is gone
		}
		return o.Start != "" && here.ProcStart(o.PID) == o.Start
	}
	// Another machine: only its lease can tell. A lease dated in the future
	// (that machine's clock is ahead) counts as fresh.
	return !lease.IsZero() && now.Sub(lease) < leaseTTL
}

var (
	hereOnce sync.Once
	here     hostView
)

// localHost reads this machine's identity once. FERRY_MACHINE_ID overrides
// /etc/machine-id, for containers cloned with one id (and for tests that
// play a second machine).
func localHost() hostView {
	hereOnce.Do(func() {
		here = hostView{ProcStart: procStart}
		here.Machine = strings.TrimSpace(os.Getenv("FERRY_MACHINE_ID"))
		if here.Machine == "" {
			for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
				if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "" {
					here.Machine = strings.TrimSpace(string(b))
					break
				}
			}
		}
		if here.Machine == "" {
			h, _ := os.Hostname()
			here.Machine = "host-" + h
		}
		here.Machine = strings.ReplaceAll(here.Machine, ":", "-")
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			here.Boot = strings.ReplaceAll(strings.TrimSpace(string(b)), ":", "-")
		}
	})
	return here
}

// OwnerToken names this process.
func OwnerToken() string {
	h := localHost()
	pid := os.Getpid()
	return ownerID{Machine: h.Machine, Boot: h.Boot, PID: pid, Start: procStart(pid)}.token()
}

func procStart(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name may contain spaces; fields after it are fixed.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// OwnerPID is the process id in a journal row's owner token (0 if there is
// none), for messages such as "owned by ferry pid 1234".
func OwnerPID(token string) int {
	o, _ := parseOwner(token)
	return o.PID
}

// OwnerMachine is the machine id in an owner token ("" for older tokens).
func OwnerMachine(token string) string {
	o, _ := parseOwner(token)
	return o.Machine
}

// OwnedHere reports whether this process owns a journal row.
func OwnedHere(token string) bool { return token != "" && token == OwnerToken() }

// lease keeps this process's lease renewed while the journal is in use.
type lease struct {
	once  sync.Once
	token string
	err   error
}

// Owner returns this process's owner token, first recording its lease (and
// starting its renewal) so that no row names an owner without one.
func (j *Journal) Owner(ctx context.Context) (string, error) {
	j.lease.once.Do(func() {
		j.lease.token = OwnerToken()
		if j.lease.err = j.renewLease(ctx); j.lease.err != nil {
			return
		}
		go j.keepLease()
	})
	if j.lease.err != nil {
		return "", dbErr(j.lease.err, "journal: owner lease")
	}
	return j.lease.token, nil
}

func (j *Journal) renewLease(ctx context.Context) error {
	o, _ := parseOwner(j.lease.token)
	now := ms(j.now())
	_, err := j.exec(ctx, j.db, `INSERT INTO owner_leases (owner, machine, pid, renewed_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(owner) DO UPDATE SET renewed_at = excluded.renewed_at`, j.lease.token, o.Machine, o.PID, now)
	return dbErr(err, "owner lease")
}

// keepLease renews the lease until Close. A failed renewal (the file busy
// past the timeout) is retried at the next tick: leaseTTL spans several.
func (j *Journal) keepLease() {
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		select {
		case <-j.closed:
			return
		case <-t.C:
		}
		if j.renewLease(context.Background()) == nil {
			_, _ = j.exec(context.Background(), j.db, "DELETE FROM owner_leases WHERE renewed_at < ?", ms(j.now().Add(-leaseKeep)))
		}
	}
}

// ownerAlive reports whether the owner of a row or a drain still runs, by
// /proc on its own machine and by its lease from any other. q is the
// database or the transaction the caller decides in.
func (j *Journal) ownerAlive(ctx context.Context, q querier, token string) (bool, error) {
	o, ok := parseOwner(token)
	if !ok {
		return false, nil
	}
	h := localHost()
	var renewed time.Time
	if o.Machine != "" && o.Machine != h.Machine {
		rows, err := q.QueryContext(ctx, j.d.rebind("SELECT renewed_at FROM owner_leases WHERE owner = ?"), token)
		if err != nil {
			return false, dbErr(err, "owner lease")
		}
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return false, dbErr(err, "owner lease")
			}
			renewed = time.UnixMilli(v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, dbErr(err, "owner lease")
		}
	}
	return ownerLive(o, h, renewed, j.now()), nil
}

// OwnerAlive reports whether the ferry process that owns a journal row or a
// drain still runs, on this machine or another sharing the state; PID reuse
// does not fool it. When the state cannot be read it answers true: callers
// use it to decide whether they may take a row over, and must not then.
func (j *Journal) OwnerAlive(ctx context.Context, token string) bool {
	alive, err := j.ownerAlive(ctx, j.db, token)
	return alive || err != nil
}

// DescribeOwner says who owns a row, for messages: "ferry pid 1234" or
// "ferry pid 1234 on machine 3d12…".
func DescribeOwner(token string) string {
	o, ok := parseOwner(token)
	if !ok {
		return "an unknown ferry process"
	}
	if o.Machine != "" && o.Machine != localHost().Machine {
		m := o.Machine
		if len(m) > 12 {
			m = m[:12]
		}
		return fmt.Sprintf("ferry pid %d on machine %s", o.PID, m)
	}
	return fmt.Sprintf("ferry pid %d", o.PID)
}
