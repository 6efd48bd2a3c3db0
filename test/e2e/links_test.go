//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

// Emulated links (issue 13): with the lab up as FERRY_LAB_LINKS=netns (the default) every
// host sits in a network namespace of its own, joined to the others through
// a bridge, and hack/lab-link.sh gives a link between two of them a
// bandwidth, a delay, loss, or cuts it. These tests run there only (from the
// lab's client namespace: `make e2e`, or hack/lab-exec.sh go test -tags e2e
// ./test/e2e/) and skip on the loopback lab (FERRY_LAB_LINKS=).

// linkRateMiB is the bandwidth the tests give the host1 -> host2 link.
const linkRateMiB = 20

// linksLab skips the test unless the lab runs with emulated links, and fails
// it unless the test runs in the lab's client namespace (the hosts' addresses
// exist only inside the lab's namespaces).
func linksLab(t *testing.T) {
	t.Helper()
	lab := labEnv()
	if lab["FERRY_LAB_LINKS"] != "netns" {
		t.Skipf("the lab at %s runs without emulated links (FERRY_LAB_LINKS=netns hack/lab-up.sh; tests through hack/lab-exec.sh)", labRoot)
	}
	client := lab["FERRY_LAB_NETNS_CLIENT"]
	self, err1 := os.Stat("/proc/self/ns/net")
	ns, err2 := os.Stat(filepath.Join("/run/netns", client))
	if err1 != nil || err2 != nil || !os.SameFile(self, ns) {
		t.Fatalf("the tests do not run in the lab's client namespace %s: run them through hack/lab-exec.sh", client)
	}
}

// labLink runs hack/lab-link.sh; it returns its output and exit code.
func labLink(t *testing.T, args ...string) (string, int) {
	t.Helper()
	c := exec.Command("bash", append([]string{filepath.Join(repoRoot, "hack", "lab-link.sh")}, args...)...)
	c.Env = append(os.Environ(), "FERRY_LAB_ROOT="+labRoot)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if c.ProcessState == nil {
		t.Fatalf("lab-link.sh %v: %v", args, err)
	}
	return out.String(), exitCode(c, err)
}

// mustLink runs hack/lab-link.sh A B ARGS... and fails the test unless it succeeds.
func mustLink(t *testing.T, a, b string, args ...string) {
	t.Helper()
	if out, code := labLink(t, append([]string{a, b}, args...)...); code != 0 {
		t.Fatalf("lab-link.sh %s %s %v: exit %d\n%s", a, b, args, code, out)
	}
}

// setLink shapes a link and restores it when the test ends.
func setLink(t *testing.T, a, b string, args ...string) {
	t.Helper()
	restoreLinkAtEnd(t, a, b)
	mustLink(t, a, b, args...)
}

func restoreLinkAtEnd(t *testing.T, a, b string) {
	t.Cleanup(func() {
		if out, code := labLink(t, a, b, "--restore"); code != 0 {
			t.Errorf("restoring %s <-> %s: exit %d\n%s", a, b, code, out)
		}
	})
}

var tcSent = regexp.MustCompile(`Sent (\d+) bytes`)

// linkSent is what the shaped class of a -> b has carried (lab-link.sh --show).
func linkSent(t *testing.T, a, b string) uint64 {
	t.Helper()
	out, code := labLink(t, a, b, "--show")
	if code != 0 {
		t.Fatalf("lab-link.sh %s %s --show: exit %d\n%s", a, b, code, out)
	}
	first, _, _ := strings.Cut(out, "\n"+b+" -> ") // a -> b comes first
	m := tcSent.FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("no class statistics for %s -> %s in:\n%s", a, b, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// fillGuest is a guest whose every page of a 128 MiB working set holds data
// (written once, then only read): a move sends about that much.
func fillGuest(t *testing.T, name string) {
	t.Helper()
	newGuest(t, name, guestSpec{host: "1", memMiB: 256, wssMiB: 128})
	heartbeatAbove(t, name, heartbeat(t, name)+8, 30*time.Second)
}

// overNarrowLink is a test's env with guest vm on host1 (fillGuest) and the
// host1 -> host2 link at linkRateMiB until the test ends.
func overNarrowLink(t *testing.T, vm string) *env {
	t.Helper()
	linksLab(t)
	e := newEnv(t)
	fillGuest(t, vm)
	setLink(t, "host1", "host2", "--rate", fmt.Sprintf("%dMiB", linkRateMiB))
	return e
}

// A move over a 20 MiB/s link from host1 to host2 completes and takes at least
// the time the link needs for what the move sent; host1's shaped class
// carried it.
func TestEmulatedLinkBandwidth(t *testing.T) {
	const vm = "e2e-link-rate"
	e := overNarrowLink(t, vm)
	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2")
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("exit %d, state %s: %s", r.code, res.State, r.stderr)
	}
	sent, took := res.Live.DataSent, time.Duration(res.Live.MigrationMS)*time.Millisecond
	if sent < 100<<20 {
		t.Fatalf("the move sent %d bytes: too little to measure the link (the guest's working set is 128 MiB)", sent)
	}
	// The wire carries more than the stream (TLS, TCP/IP headers); the
	// shaper's token bucket lends at most about its burst (10 ms) ahead.
	floor := time.Duration(float64(sent)/float64(linkRateMiB<<20)*float64(time.Second)) - 50*time.Millisecond
	rate := float64(sent) / (1 << 20) / took.Seconds()
	t.Logf("sent %.1f MiB in %s: %.1f MiB/s over the %d MiB/s link", float64(sent)/(1<<20), took, rate, linkRateMiB)
	if took < floor {
		t.Fatalf("sent %d bytes in %s, faster than a %d MiB/s link allows (at least %s)", sent, took, linkRateMiB, floor)
	}
	if carried := linkSent(t, "host1", "host2"); carried < sent {
		t.Fatalf("host1's shaped class towards host2 carried %d bytes, less than the %d the move sent", carried, sent)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before+4, 30*time.Second)
}

// connectTime is how long a TCP connection from host n's namespace to addr
// takes to open: one round trip (plus the cost of entering the namespace).
func connectTime(t *testing.T, n, addr string) time.Duration {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	start := time.Now()
	out, err := inHostNet(n, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		t.Fatalf("connecting from host%s to %s: %v %s", n, addr, err, out)
	}
	return d
}

// A move over a link with 50 ms of delay each way (hack/lab-link.sh --delay:
// the lab's userspace delay stage, hack/linkdelay)
// completes and the guest's heartbeat continues on the destination; the plan,
// told the round trip (link_rtt_ms), accounts for what it does to one stream.
func TestEmulatedLinkDelay(t *testing.T) {
	linksLab(t)
	e := newEnv(t)
	const vm = "e2e-link-delay"
	setLink(t, "host1", "host2", "--delay", "50ms", "--both")
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 32, rate: 2000})
	// The round trip between the hosts' namespaces is 2 × 50 ms.
	rtt := connectTime(t, "1", labNet()+".2:16509")
	t.Logf("TCP connect host1 -> host2: %s", rtt)
	if rtt < 95*time.Millisecond {
		t.Fatalf("a connection from host1 to host2 opened in %s: the 50 ms delay each way is not there", rtt)
	}

	lan, r := migrateJSON(t, e, vm, "--to", "host2", "--plan")
	if r.code != 0 || lan.Live.Plan == nil {
		t.Fatalf("plan: exit %d, %s", r.code, r.stderr)
	}
	e.config = inventoryWith(t, "2", "link_rtt_ms: 100")
	long, r := migrateJSON(t, e, vm, "--to", "host2", "--plan")
	if r.code != 0 || long.Live.Plan == nil {
		t.Fatalf("plan with link_rtt_ms: exit %d, %s", r.code, r.stderr)
	}
	pl := long.Live.Plan
	t.Logf("plan over 100 ms: %s", pl.Reason)
	if pl.Inputs.LinkRTTMS != 100 || !strings.Contains(pl.Reason, "100 ms round trip holds one stream to 30 MiB/s") ||
		pl.Precopy.Total() <= lan.Live.Plan.Precopy.Total() {
		t.Fatalf("the plan does not account for the round trip: inputs %+v, %s predicted against %s on the LAN: %s",
			pl.Inputs, pl.Precopy.Total(), lan.Live.Plan.Precopy.Total(), pl.Reason)
	}

	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2")
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("exit %d, state %s: %s", r.code, res.State, r.stderr)
	}
	t.Logf("moved over the delayed link in %d ms (downtime %d ms)", res.Live.MigrationMS, res.Live.DowntimeMS)
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before+4, 60*time.Second)
}

// The link between host1 and host2 is cut in the middle of pre-copy: the move
// rolls back (exit 3), the guest keeps running on host1 and nothing of it is
// left on host2; once the link is restored a move goes through.
func TestEmulatedLinkCutRollsBack(t *testing.T) {
	const vm = "e2e-link-cut"
	e := overNarrowLink(t, vm) // pre-copy lasts seconds, the cut falls inside it
	b := startFerry(t, e, "migrate", vm, "--to", "host2", "-o", "json")
	waitFor(t, "pre-copy to be under way", 60*time.Second, func() bool {
		select {
		case code := <-b.done:
			t.Fatalf("ferry exited %d before the cut\n%s%s", code, b.out.String(), b.errb.String())
		default:
		}
		active, processed := jobActive(t, "1", vm)
		return active && processed > 16<<20
	})
	mustLink(t, "host1", "host2", "--cut")
	cut := time.Now()
	var code int
	select {
	case code = <-b.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("ferry did not finish within 3 min of the cut\n%s", b.errb.String())
	}
	t.Logf("ferry exit %d, %s after the cut\n%s%s", code, time.Since(cut).Round(time.Second), b.out.String(), b.errb.String())
	var res orchestrator.Result
	if err := json.Unmarshal(b.out.Bytes(), &res); err != nil {
		t.Fatalf("result json: %v", err)
	}
	if code != 3 || res.State != journal.StateRolledBack {
		t.Fatalf("exit %d, state %s (%s), want 3 rolled_back", code, res.State, res.Error)
	}
	runsExactlyOn(t, vm, "1")
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRolledBack || rows[0].Error == "" {
		t.Fatalf("journal %+v", rows)
	}
	waitFor(t, "host2 to drop the half-made copy", 60*time.Second, func() bool { return domstate(t, "2", vm) == "" })
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)

	// Restored, the link carries the move.
	mustLink(t, "host1", "host2", "--restore")
	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2")
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("after --restore: exit %d, state %s: %s", r.code, res.State, r.stderr)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before+4, 30*time.Second)
}

// The SLA monitors' partition case (DESIGN.md §6, sla/doc.go rule 3): the
// link between ferry's machine and host2 is cut, so the monitor's poller (and
// its event connection) lose host2, while host2 goes on working: a move to
// host2 made from host1's side of the network records live hypervisor events
// of host2 during the outage. The report shows the poller's outage of host2 as
// a monitoring partition and charges the guest on host2 nothing for it.
func TestSLAPartition(t *testing.T) {
	linksLab(t)
	e := newEnv(t)
	const onHost2, mover = "e2e-part-stay", "e2e-part-move"
	newGuest(t, onHost2, guestSpec{host: "2", memMiB: 128, wssMiB: 8, rate: 200})
	newGuest(t, mover, guestSpec{host: "1", memMiB: 128, wssMiB: 8, rate: 200})
	start := time.Now()

	startMonitor(t, e, "")
	waitEvent(t, e, "VM_Reachable of the guest on host2", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.VMReachable && ev.Host == "host2"
	}, "--vm", onHost2)

	// ferry's machine loses host2; host1 and host2 still see each other.
	setLink(t, "client", "host2", "--cut")
	evs := waitEvent(t, e, "PS_Unreachable for host2", 60*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.PSUnreachable
	}, "--host", "host2")
	unreachableAt := evs[slices.IndexFunc(evs, func(ev sla.Event) bool { return ev.Kind == sla.PSUnreachable })].ObservedAt

	// From host1's side (another ferry, another machine), host2 is there.
	mv := inHostNet("1", "timeout", "300", ferryBin, "migrate", mover, "--to", "host2", "-o", "json")
	mv.Env = append(os.Environ(), "FERRY_CONFIG="+e.config, "FERRY_STATE="+e.state)
	out, err := mv.CombinedOutput()
	t.Logf("ferry migrate from host1's namespace: %v\n%s", err, out)
	if err != nil {
		t.Fatalf("the move to host2 from host1's side failed: %v", err)
	}
	waitEvent(t, e, "Migration_Completed on host2 during the outage", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.MigrationCompleted && ev.Host == "host2" && ev.ObservedAt.After(unreachableAt)
	}, "--host", "host2")

	mustLink(t, "client", "host2", "--restore")
	waitEvent(t, e, "PS_Reachable for host2 after the restore", 60*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.PSReachable && ev.ObservedAt.After(unreachableAt)
	}, "--host", "host2")

	// the report must know the poller's interval: a live event in the last
	// two intervals before PS_Reachable is the recovery, not a partition
	rep, entry := vmReport(t, e, onHost2, start, "--poll-interval", "1s")
	var partition *sla.Interval
	for i, iv := range entry.Intervals {
		if iv.Class == sla.ClassDowntime {
			t.Errorf("charged as downtime: %+v", iv)
		}
		if iv.Rule == sla.RulePartition {
			partition = &entry.Intervals[i]
		}
	}
	if partition == nil || partition.Class != sla.ClassPartition {
		t.Fatalf("no monitoring-partition interval for %s: %+v", onHost2, entry.Intervals)
	}
	checkFiguresAddUp(t, rep.Report, entry, rep.Events)
	heartbeatAbove(t, onHost2, heartbeat(t, onHost2)+2, 30*time.Second)
}
