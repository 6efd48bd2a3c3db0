//go:build e2e

// Package e2e runs ferry as a process against the lab of real libvirt hosts
// (hack/lab-up.sh, DESIGN.md §8). It needs the lab; `make e2e` brings it up.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

var (
	repoRoot  string
	labRoot   string
	ferryBin  string
	labConfig string
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	labRoot = os.Getenv("FERRY_LAB_ROOT")
	if labRoot == "" {
		labRoot = "/var/lib/ferry-lab"
	}
	labConfig = filepath.Join(labRoot, "ferry.yaml")
	if _, err := os.Stat(labConfig); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the lab is not up (%v): run `make lab-up` (or `make e2e`, which brings it up)\n", err)
		os.Exit(1)
	}
	for _, h := range []string{"1", "2"} {
		if out, err := exec.Command("virsh", "-c", hostURI(h), "version").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: lab host%s not answering: %v\n%s\nrun `make lab-up`\n", h, err, out)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "ferry-e2e-")
	if err != nil {
		panic(err)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, "./cmd/ferry")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building ferry: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// labNet is the loopback /24 of the lab (hack/lab-common.sh FERRY_LAB_NET).
func labNet() string {
	if n := os.Getenv("FERRY_LAB_NET"); n != "" {
		return n
	}
	return "127.0.10"
}

// labEnv is the lab's lab.env (hack/lab-up.sh), read once.
var labEnv = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	data, err := os.ReadFile(filepath.Join(labRoot, "lab.env"))
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
})

// hostNetns is host n's network namespace when the lab runs with emulated
// links (FERRY_LAB_LINKS=netns), "" on the loopback lab.
func hostNetns(n string) string {
	for _, ns := range strings.Split(labEnv()["FERRY_LAB_NETNS_HOSTS"], ",") {
		if i := strings.LastIndex(ns, "-h"); i >= 0 && ns[i+2:] == n {
			return ns
		}
	}
	return ""
}

// inHostNet is a command that sees the network as host n does: in its
// network namespace with emulated links, right here on the loopback lab.
func inHostNet(n, name string, args ...string) *exec.Cmd {
	if ns := hostNetns(n); ns != "" {
		return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
	return exec.Command(name, args...)
}

// hostURI is host n over plain TCP, for the tests' own virsh calls.
func hostURI(n string) string { return "qemu+tcp://" + labNet() + "." + n + "/system" }

// labURI is host n as the lab inventory (ferry.yaml) reaches it, less ferry's
// own credential path: what hooks and peers see.
func labURI(n string) string { return "qemu+tls://" + labNet() + "." + n + "/system" }

// labInvURI is host n's URI in the lab inventory, ferry's credentials included.
func labInvURI(n string) string {
	return labURI(n) + "?pkipath=" + filepath.Join(labRoot, "pki", "ferry")
}

// env is one test's ferry environment: its own state database.
type env struct {
	t      *testing.T
	state  string
	config string
}

func newEnv(t *testing.T) *env {
	return &env{t: t, state: filepath.Join(t.TempDir(), "ferry.db"), config: labConfig}
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, ferryBin, args...)
	c.Env = append(os.Environ(), "FERRY_CONFIG="+e.config, "FERRY_STATE="+e.state)
	return c
}

// ferry runs the CLI to completion.
func (e *env) ferry(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		e.t.Fatalf("ferry %v: %v", args, err)
	}
	e.t.Logf("ferry %s -> exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func (e *env) history(vm string) []journal.Record {
	e.t.Helper()
	r := e.ferry("history", "--vm", vm, "-o", "json")
	if r.code != 0 {
		e.t.Fatalf("history: exit %d", r.code)
	}
	var rows []journal.Record
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		e.t.Fatalf("history json: %v", err)
	}
	return rows
}

// labGuest runs hack/lab-guest.sh.
func labGuest(t *testing.T, args ...string) (string, error) {
	t.Helper()
	c := exec.Command("bash", append([]string{filepath.Join(repoRoot, "hack", "lab-guest.sh")}, args...)...)
	c.Env = append(os.Environ(), "FERRY_LAB_ROOT="+labRoot)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

type guestSpec struct {
	host    string
	memMiB  int
	wssMiB  int
	rate    int
	noStart bool
}

// newGuest defines (and starts) a dirtying guest and removes it when the test ends.
func newGuest(t *testing.T, name string, g guestSpec) {
	t.Helper()
	if g.host == "" {
		g.host = "1"
	}
	if g.memMiB == 0 {
		g.memMiB = 128
	}
	if g.wssMiB == 0 {
		g.wssMiB = 16
	}
	_, _ = labGuest(t, "undefine", name) // leftovers of an earlier run
	args := []string{"define", name, "--host", g.host, "--mem", strconv.Itoa(g.memMiB), "--wss", strconv.Itoa(g.wssMiB), "--rate", strconv.Itoa(g.rate)}
	if !g.noStart {
		args = append(args, "--start")
	}
	if out, err := labGuest(t, args...); err != nil {
		t.Fatalf("define guest %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := labGuest(t, "undefine", name); err != nil {
			t.Logf("cleanup %s: %v %s", name, err, out)
		}
	})
	if !g.noStart {
		heartbeatAbove(t, name, 0, 60*time.Second)
	}
}

// heartbeat returns the guest's last heartbeat counter; it fails the test if
// the console shows corruption, an Oops or a panic.
func heartbeat(t *testing.T, name string) int {
	t.Helper()
	out, err := labGuest(t, "log", name)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		t.Fatalf("guest %s console shows corruption:\n%s", name, out)
	}
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(lastLine(out)))
	return n
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// heartbeatAbove waits until the guest's counter passes n.
func heartbeatAbove(t *testing.T, name string, n int, within time.Duration) int {
	t.Helper()
	got := 0
	waitFor(t, fmt.Sprintf("guest %s: heartbeat to pass %d", name, n), within, func() bool {
		got = heartbeat(t, name)
		return got > n
	})
	return got
}

// domstate asks a host directly (virsh), not through ferry: "" when absent.
func domstate(t *testing.T, host, name string) string {
	t.Helper()
	out, err := exec.Command("virsh", "-q", "-c", hostURI(host), "domstate", name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "failed to get domain") || strings.Contains(string(out), "Domain not found") {
			return ""
		}
		t.Fatalf("virsh domstate %s on host%s: %v %s", name, host, err, out)
	}
	return strings.TrimSpace(string(out))
}

// labHosts lists the lab's host numbers ("1", "2", ...) from its lab.env.
func labHosts(t *testing.T) []string {
	t.Helper()
	lab := labEnv()
	if len(lab) == 0 {
		t.Fatalf("no lab.env in %s (hack/lab-up.sh writes it)", labRoot)
	}
	n, err := strconv.Atoi(lab["FERRY_LAB_HOSTS"])
	if err != nil {
		n = 2
	}
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

// runsExactlyOn asserts the guest runs on host and nowhere else.
func runsExactlyOn(t *testing.T, name, host string) {
	t.Helper()
	for _, h := range labHosts(t) {
		st := domstate(t, h, name)
		if h == host && st != "running" {
			t.Fatalf("%s on host%s is %q, want running", name, h, st)
		}
		if h != host && st == "running" {
			t.Fatalf("%s also runs on host%s", name, h)
		}
	}
}

func qemuPID(t *testing.T, host, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(labRoot, "hosts", "host"+host, "run", "qemu", name+".pid"))
	if err != nil {
		t.Fatalf("qemu pid file of %s on host%s: %v", name, host, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func libvirtdPID(t *testing.T, host string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(labRoot, "hosts", "host"+host, "run", "libvirtd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func kill(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
	}
}

// jobActive reports whether a migration job of the guest is under way on a host.
func jobActive(t *testing.T, host, name string) (bool, uint64) {
	out, err := exec.Command("virsh", "-c", hostURI(host), "domjobinfo", name).CombinedOutput()
	if err != nil {
		return false, 0
	}
	s := string(out)
	if !strings.Contains(s, "Unbounded") && !strings.Contains(s, "Bounded") {
		return false, 0
	}
	var processed uint64
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "Data processed:") || strings.HasPrefix(line, "Memory processed:") {
			f := strings.Fields(strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "Data processed:"), "Memory processed:")))
			if len(f) == 2 {
				v, _ := strconv.ParseFloat(f[0], 64)
				mult := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[f[1]]
				if uint64(v*mult) > processed {
					processed = uint64(v * mult)
				}
			}
		}
	}
	return true, processed
}

// restartLabHost brings a killed or hung lab host back (lab-up leaves healthy
// ones alone); what lab-up had to restart is in the test's log.
func restartLabHost(t *testing.T) {
	t.Helper()
	c := exec.Command("bash", filepath.Join(repoRoot, "hack", "lab-up.sh"))
	c.Env = append(os.Environ(), "FERRY_LAB_ROOT="+labRoot)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("lab-up to restart the host: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "has not answered") || strings.Contains(l, ": starting virtlogd") || strings.Contains(l, "is down, starting") {
			t.Logf("lab-up: %s", l)
		}
	}
}
