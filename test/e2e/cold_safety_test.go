//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// Cold moves that must not delete what another VM uses, nor commit a copy
// the source changed under.

const imgDir = "/var/lib/libvirt/images"

// safeDisk is one disk of a test VM at an explicit path (several VMs may
// name the same file).
type safeDisk struct {
	dev, format, path string
}

// defineVM defines a shut-off lab guest on host1 with the given disks and
// undefines it on every lab host when the test ends.
func defineVM(t *testing.T, vm string, disks []safeDisk) {
	t.Helper()
	undefineEverywhere(t, vm)
	t.Cleanup(func() { undefineEverywhere(t, vm) })
	x, err := labGuest(t, "xml", vm)
	if err != nil {
		t.Fatalf("lab-guest xml: %v\n%s", err, x)
	}
	var dx strings.Builder
	for _, d := range disks {
		fmt.Fprintf(&dx, "    <disk type='file' device='disk'><driver name='qemu' type='%s'/><source file='%s'/><target dev='%s' bus='virtio'/></disk>\n", d.format, d.path, d.dev)
	}
	x = strings.Replace(x, "<controller type='usb' model='none'/>", "<controller type='usb' model='none'/>\n"+dx.String(), 1)
	f := filepath.Join(t.TempDir(), vm+".xml")
	if err := os.WriteFile(f, []byte(x), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(labRoot, "shared", "console", vm+".log"))
	virshOK(t, "1", "define", f)
}

func undefineEverywhere(t *testing.T, vm string) {
	for _, h := range []string{"1", "2"} {
		if st := domstate(t, h, vm); st != "" {
			if st != "shut off" {
				_ = exec.Command("virsh", "-c", hostURI(h), "destroy", vm).Run()
			}
			_ = exec.Command("virsh", "-c", hostURI(h), "undefine", "--nvram", vm).Run()
		}
		logs, _ := filepath.Glob(hostPath(h, "/var/log/libvirt/qemu/"+vm+".log*"))
		for _, l := range logs {
			os.Remove(l)
		}
	}
}

// labFiles removes the files on both hosts now and when the test ends.
func labFiles(t *testing.T, paths ...string) {
	clean := func() {
		for _, h := range []string{"1", "2"} {
			for _, p := range paths {
				os.Remove(hostPath(h, p))
			}
			_ = exec.Command("virsh", "-c", hostURI(h), "pool-refresh", "default").Run()
		}
	}
	clean()
	t.Cleanup(clean)
}

// inHost runs a command in a lab host's mount namespace, where the host's
// paths (/var/lib/libvirt/...) are what the images' headers name.
func inHost(t *testing.T, host string, name string, args ...string) string {
	t.Helper()
	pid := fmt.Sprint(libvirtdPID(t, host))
	return run(t, "nsenter", append([]string{"-t", pid, "-m", "--", name}, args...)...)
}

// sharedBase makes base.qcow2 (16 MiB of 0x71) and an overlay over it
// (1 MiB of 0x72 at 32 MiB) on host1, and VMs a (disk: the base) and b
// (disk: the overlay).
func sharedBase(t *testing.T, prefix string) (a, b, base, overlay string) {
	t.Helper()
	a, b = prefix+"-a", prefix+"-b"
	base, overlay = imgDir+"/"+prefix+"-base.qcow2", imgDir+"/"+prefix+"-overlay.qcow2"
	labFiles(t, base, overlay)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", hostPath("1", base), "1G")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x71 0 16M", hostPath("1", base))
	inHost(t, "1", "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
	inHost(t, "1", "qemu-io", "-f", "qcow2", "-c", "write -P 0x72 32M 1M", overlay)
	virshOK(t, "1", "pool-refresh", "default")
	defineVM(t, a, []safeDisk{{"vda", "qcow2", base}})
	defineVM(t, b, []safeDisk{{"vda", "qcow2", overlay}})
	return a, b, base, overlay
}

// bootsOn starts a VM on a host, checks that it runs, and stops it again.
func bootsOn(t *testing.T, host, vm string) {
	t.Helper()
	virshOK(t, host, "start", vm)
	waitFor(t, vm+" running on host"+host, 30*time.Second, func() bool { return domstate(t, host, vm) == "running" })
	virshOK(t, host, "destroy", vm)
}

func artifactAt(t *testing.T, res orchestrator.Result, src string) (state, reason string, keptBy []string) {
	t.Helper()
	for _, a := range res.Cold.Artifacts {
		if a.SrcPath == src {
			return a.State, a.KeepReason, a.KeptBy
		}
	}
	t.Fatalf("no artifact for %s in %+v", src, res.Cold.Artifacts)
	return
}

func mentions(list []string, s string) bool {
	for _, l := range list {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// VM a's disk is the backing file of VM b's overlay. Moving a keeps the
// file on host1 for b (b still boots and reads its base); moving b copies
// overlay and base to host2 and keeps the base on host1 for a.
func TestColdKeepsASharedBase(t *testing.T) {
	t.Run("move the base's VM", func(t *testing.T) {
		e := newEnv(t)
		a, b, base, overlay := sharedBase(t, "e2e-cs1")
		r := e.ferry("migrate", a, "--to", "host2", "--cold", "-o", "json")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		res := coldResult(t, r)
		state, reason, keptBy := artifactAt(t, res, base)
		if state != "kept" || !mentions(keptBy, "domain "+b) || !strings.Contains(reason, b) {
			t.Fatalf("base: state %q reason %q kept by %q, want kept for %s", state, reason, keptBy, b)
		}
		if !exists(hostPath("1", base)) {
			t.Fatalf("%s deleted on host1 although %s's overlay is backed by it", base, b)
		}
		if domstate(t, "2", a) != "shut off" || domstate(t, "1", a) != "" {
			t.Fatalf("%s should be defined on host2 only", a)
		}
		inHost(t, "1", "qemu-img", "check", "-q", overlay)
		inHost(t, "1", "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x71 0 16M", "-c", "read -P 0x72 32M 1M", overlay)
		bootsOn(t, "1", b)
		inHost(t, "2", "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x71 0 16M", base)
	})
	t.Run("move the overlay's VM", func(t *testing.T) {
		e := newEnv(t)
		a, b, base, overlay := sharedBase(t, "e2e-cs2")
		r := e.ferry("migrate", b, "--to", "host2", "--cold", "-o", "json")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		res := coldResult(t, r)
		if state, _, _ := artifactAt(t, res, overlay); state != "moved" {
			t.Fatalf("overlay %s", state)
		}
		state, _, keptBy := artifactAt(t, res, base)
		if state != "kept" || !mentions(keptBy, "domain "+a) {
			t.Fatalf("base: state %q kept by %q, want kept for %s", state, keptBy, a)
		}
		if !exists(hostPath("1", base)) || exists(hostPath("1", overlay)) {
			t.Fatal("host1 should keep the base and not the overlay")
		}
		// The whole chain is on host2 and b boots there.
		inHost(t, "2", "qemu-img", "check", "-q", overlay)
		inHost(t, "2", "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x71 0 16M", "-c", "read -P 0x72 32M 1M", overlay)
		bootsOn(t, "2", b)
		inHost(t, "1", "qemu-img", "check", "-q", base)
		bootsOn(t, "1", a)
	})
}

// One raw file is a disk of two VMs, without <shareable/>: moving one
// keeps the file for the other, and says so.
func TestColdKeepsADiskOfAnotherVM(t *testing.T) {
	e := newEnv(t)
	const c, d = "e2e-cs3-c", "e2e-cs3-d"
	data := imgDir + "/e2e-cs3-data.img"
	labFiles(t, data)
	run(t, "qemu-img", "create", "-q", "-f", "raw", hostPath("1", data), "64M")
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x73 0 8M", hostPath("1", data))
	virshOK(t, "1", "pool-refresh", "default")
	defineVM(t, c, []safeDisk{{"vda", "raw", data}})
	defineVM(t, d, []safeDisk{{"vdb", "raw", data}})

	r := e.ferry("migrate", c, "--to", "host2", "--cold")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "kept") || !strings.Contains(r.stdout, "domain "+d) {
		t.Fatalf("the result does not say the file stays for %s:\n%s", d, r.stdout)
	}
	if !exists(hostPath("1", data)) {
		t.Fatalf("%s deleted on host1 although %s uses it", data, d)
	}
	run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x73 0 8M", hostPath("1", data))
	run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x73 0 8M", hostPath("2", data))
	if domstate(t, "2", c) != "shut off" || domstate(t, "1", c) != "" || domstate(t, "1", d) != "shut off" {
		t.Fatal("after the move c should be on host2 only, d still on host1")
	}
	bootsOn(t, "1", d)
	rows := e.history(c)
	if len(rows) != 1 || rows[0].State != journal.StateCompleted {
		t.Fatalf("journal %+v", rows)
	}
}

// lockedBuffer is an output buffer a running ferry writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// midCopy starts a capped cold move of a VM with a 100 MiB qcow2 disk (about
// 10 s of copy at 10 MiB/s) and returns once the disk's copy is under way
// on host2, seen in ferry's progress and on host2's disk.
func midCopy(t *testing.T, e *env, vm string) (p, ref string, out *lockedBuffer, c *exec.Cmd) {
	t.Helper()
	disks := []coldDisk{{dev: "vda", format: "qcow2", size: "2G", writes: []string{"write -P 0x74 0 100M"}}}
	coldVM(t, vm, disks, false)
	p = disks[0].file(vm)
	ref = keepReference(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c = e.cmd(ctx, "migrate", vm, "--to", "host2", "--cold", "--bandwidth", "10")
	out = &lockedBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the copy of disk vda to be under way", 60*time.Second, func() bool {
		return strings.Contains(out.String(), "copying disk vda") && exists(hostPath("2", p)) && allocated(t, hostPath("2", p)) > 4<<20
	})
	return p, ref, out, c
}

// rolledBackClean asserts the end state of a move the source's change
// rolled back: exit 3, nothing of the VM on host2, the source defined with
// its disk, the journal row rolled back naming the change.
func rolledBackClean(t *testing.T, e *env, vm, p string, out *lockedBuffer, c *exec.Cmd, why string) {
	t.Helper()
	code := exitCode(c, c.Wait())
	t.Logf("ferry exit %d\n%s", code, out.String())
	if code != 3 {
		t.Fatalf("exit %d, want 3 (rolled back)", code)
	}
	if domstate(t, "2", vm) != "" || exists(hostPath("2", p)) {
		t.Fatal("host2 keeps part of the VM")
	}
	vols := virshOut(t, "2", "vol-list", "default")
	if strings.Contains(vols, vm) {
		t.Fatalf("host2's pool still lists a volume of %s:\n%s", vm, vols)
	}
	if domstate(t, "1", vm) == "" || !exists(hostPath("1", p)) {
		t.Fatal("the source lost its definition or its disk")
	}
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRolledBack || !strings.Contains(rows[0].Error, why) {
		t.Fatalf("journal %+v, want rolled back naming %q", rows, why)
	}
}

// `virsh start` on the source while the disk is being copied: the move is
// rolled back before anything is defined on host2; the running source keeps
// its definition and its (unchanged) disk.
func TestColdSourceStartedMidCopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-cs4"
	p, ref, out, c := midCopy(t, e, vm)
	virshOK(t, "1", "start", vm)
	rolledBackClean(t, e, vm, p, out, c, "was started")
	if st := domstate(t, "1", vm); st != "running" {
		t.Fatalf("source %s is %q, want running (started by the test)", vm, st)
	}
	if x := virshOut(t, "1", "dominfo", vm); !strings.Contains(x, "Persistent:     yes") {
		t.Fatalf("the source lost its persistent definition:\n%s", x)
	}
	run(t, "qemu-img", "compare", "-q", "-U", "-f", "qcow2", "-F", "qcow2", ref, hostPath("1", p))
}

// Started and shut down again mid-copy, and the disk written meanwhile:
// at the check the VM is shut off as before, but the move still rolls back.
func TestColdSourceStartedAndStoppedMidCopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-cs5"
	p, _, out, c := midCopy(t, e, vm)
	virshOK(t, "1", "start", vm)
	waitFor(t, vm+" running", 30*time.Second, func() bool { return domstate(t, "1", vm) == "running" })
	virshOK(t, "1", "destroy", vm)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x75 0 1M", hostPath("1", p))
	rolledBackClean(t, e, vm, p, out, c, "was started")
	if domstate(t, "1", vm) != "shut off" {
		t.Fatal("the source changed state")
	}
	if !strings.Contains(out.String(), "changed on the source") {
		t.Fatal("the changed disk was not reported")
	}
}

// The disk is written mid-copy without the VM ever starting (no event at
// all): its changed size/times alone roll the move back.
func TestColdSourceDiskWrittenMidCopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-cs6"
	p, _, out, c := midCopy(t, e, vm)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x76 200M 1M", hostPath("1", p))
	rolledBackClean(t, e, vm, p, out, c, "changed on the source")
	if domstate(t, "1", vm) != "shut off" {
		t.Fatal("the source changed state")
	}
}

// Deleting a source file fails after the commit point (the file is made
// immutable): exit 4; `ferry recover` then finishes the move, asking afresh
// who uses what: the VM's own disk goes, the disk another VM shares stays.
func TestColdRecoverAfterCommitKeepsSharedFiles(t *testing.T) {
	e := newEnv(t)
	const vm, other = "e2e-cs7", "e2e-cs7-other"
	own, shared := imgDir+"/e2e-cs7-own.img", imgDir+"/e2e-cs7-shared.img"
	labFiles(t, own, shared)
	for _, p := range []string{own, shared} {
		run(t, "qemu-img", "create", "-q", "-f", "raw", hostPath("1", p), "16M")
		run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", hostPath("1", p))
	}
	virshOK(t, "1", "pool-refresh", "default")
	defineVM(t, vm, []safeDisk{{"vda", "raw", own}, {"vdb", "raw", shared}})
	defineVM(t, other, []safeDisk{{"vdb", "raw", shared}})
	run(t, "chattr", "+i", hostPath("1", own))
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", hostPath("1", own)).Run() })

	r := e.ferry("migrate", vm, "--to", "host2", "--cold")
	if r.code != 4 {
		t.Fatalf("exit %d, want 4 (needs recover)\n%s", r.code, r.stderr)
	}
	if domstate(t, "1", vm) != "" || domstate(t, "2", vm) != "shut off" {
		t.Fatal("past the commit point the VM should be defined on host2 only")
	}
	run(t, "chattr", "-i", hostPath("1", own))
	r = e.ferry("recover", "-o", "json")
	if r.code != 0 {
		t.Fatalf("recover: exit %d\n%s", r.code, r.stderr)
	}
	if exists(hostPath("1", own)) {
		t.Fatalf("%s still on host1 after recover", own)
	}
	if !exists(hostPath("1", shared)) {
		t.Fatalf("recover deleted %s, a disk of %s", shared, other)
	}
	bootsOn(t, "1", other)
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateCompleted {
		t.Fatalf("journal %+v", rows)
	}
}
