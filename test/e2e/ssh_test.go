//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

// qemu+ssh (issue 13): every lab host runs its own sshd on ADDR:2222 in its
// mount namespace (hack/lab-ssh.sh); ferry-ssh.yaml reaches the hosts there
// with ferry's key, and in a peer-to-peer migration the source host's libvirtd
// opens qemu+ssh to the destination with its own /root/.ssh identity.

const labSSHPort = "2222"

// TestMigrationOverSSH moves a guest there and back with ferry-ssh.yaml. The
// destination's sshd must have let in ferry's key (ferry's own connections)
// and the source host's key (the peer-to-peer connection, which only that
// host's libvirtd holds) during each move.
func TestMigrationOverSSH(t *testing.T) {
	e := newEnv(t)
	e.config = labInventory(t, "ferry-ssh.yaml")
	const vm = "e2e-over-ssh"
	newGuest(t, vm, guestSpec{})
	ferryKey := sshFingerprint(t, filepath.Join(labRoot, "ssh", "ferry_ed25519.pub"))

	for _, mv := range []struct{ from, to string }{{"1", "2"}, {"2", "1"}} {
		before := heartbeat(t, vm)
		srcLog, dstLog := sshdLogMark(t, mv.from), sshdLogMark(t, mv.to)
		res, r := migrateJSON(t, e, vm, "--to", "host"+mv.to)
		if r.code != 0 || res.State != journal.StateCompleted {
			t.Fatalf("host%s -> host%s over ssh: exit %d, state %s: %s", mv.from, mv.to, r.code, res.State, r.stderr)
		}
		runsExactlyOn(t, vm, mv.to)
		heartbeatAbove(t, vm, before, 30*time.Second)

		peerKey := sshFingerprint(t, filepath.Join(labRoot, "hosts", "host"+mv.from, "rootssh", "id_ed25519.pub"))
		dst := dstLog.since(t)
		if !acceptedKey(dst, peerKey) {
			t.Fatalf("host%s's sshd let in no key of host%s (%s) during the move: the peer-to-peer connection did not go over ssh\n%s",
				mv.to, mv.from, peerKey, dst)
		}
		if !acceptedKey(dst, ferryKey) || !acceptedKey(srcLog.since(t), ferryKey) {
			t.Fatalf("ferry's key (%s) not let in by both hosts' sshd during the move", ferryKey)
		}
		t.Logf("host%s sshd: accepted host%s's key %s (peer-to-peer) and ferry's key %s", mv.to, mv.from, peerKey, ferryKey)
	}

	// The journal has both moves completed between qemu+ssh URIs.
	rows := e.history(vm)
	if len(rows) != 2 {
		t.Fatalf("journal: %d rows, want 2", len(rows))
	}
	for _, row := range rows {
		if row.State != journal.StateCompleted || !strings.HasPrefix(row.SourceURI, "qemu+ssh://root@") ||
			!strings.HasPrefix(row.DestURI, "qemu+ssh://root@") {
			t.Fatalf("journal row %s: %s -> %s, want completed between qemu+ssh URIs", row.State, row.SourceURI, row.DestURI)
		}
	}
}

// TestSSHHostKeyMismatch: a known_hosts with another key for host2 makes ferry
// refuse host2, saying so, and a move there moves nothing. The same inventory
// with the lab's own known_hosts reaches host2 (the control).
func TestSSHHostKeyMismatch(t *testing.T) {
	e := newEnv(t)
	e.config = labInventory(t, "ferry-ssh.yaml")
	if r := e.ferry("hosts", "host2"); r.code != 0 {
		t.Fatalf("control: ferry hosts host2 over ssh with the lab's known_hosts: exit %d", r.code)
	}

	// ferry's ssh client configuration (lab-ssh.sh) with a known_hosts whose
	// line for host2 carries a key host2 does not have.
	dir := t.TempDir()
	good, err := os.ReadFile(filepath.Join(labRoot, "ssh", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	host2 := "[" + labNet() + ".2]:" + labSSHPort + " "
	var kh []string
	for _, l := range strings.Split(strings.TrimSpace(string(good)), "\n") {
		if strings.HasPrefix(l, host2) {
			// another host's key under host2's name
			other, err := os.ReadFile(filepath.Join(labRoot, "hosts", "host1", "sshd", "ssh_host_ed25519_key.pub"))
			if err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(string(other))
			l = host2 + f[0] + " " + f[1]
		}
		kh = append(kh, l)
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	writeFile(t, knownHosts, strings.Join(kh, "\n")+"\n", 0o644)
	wrapper := sshClientWith(t, dir, knownHosts)
	e.config = sshInventory(t, func(uri string) string {
		return strings.Replace(uri, "command="+filepath.Join(labRoot, "ssh", "ssh"), "command="+wrapper, 1)
	})

	const vm = "e2e-ssh-hostkey"
	newGuest(t, vm, guestSpec{})
	r := e.ferry("hosts", "host2")
	out := r.stdout + r.stderr
	if r.code == 0 || !strings.Contains(out, "host2") || !strings.Contains(out, "Host key verification failed") ||
		!strings.Contains(out, "has changed") {
		t.Fatalf("ferry hosts host2 with a wrong host key: exit %d, want a failure naming host2 and the changed host key:\n%s", r.code, out)
	}
	sshMoveRefused(t, e, vm, "Host key verification failed")
}

// TestSSHUnknownUser: a URI naming a user host2 does not have fails clearly,
// naming host2, and a move there moves nothing.
func TestSSHUnknownUser(t *testing.T) {
	e := newEnv(t)
	e.config = sshInventory(t, func(uri string) string {
		return strings.Replace(uri, "qemu+ssh://root@"+labNet()+".2:", "qemu+ssh://nosuchuser@"+labNet()+".2:", 1)
	})
	const vm = "e2e-ssh-user"
	newGuest(t, vm, guestSpec{})
	mark := sshdLogMark(t, "2")
	r := e.ferry("hosts", "host2")
	out := r.stdout + r.stderr
	if r.code == 0 || !strings.Contains(out, "host2") || !strings.Contains(out, "nosuchuser@") ||
		!strings.Contains(out, "Permission denied (publickey)") {
		t.Fatalf("ferry hosts host2 as nosuchuser: exit %d, want a failure naming host2 and the refused login:\n%s", r.code, out)
	}
	if log := mark.since(t); !strings.Contains(log, "Invalid user nosuchuser") {
		t.Fatalf("host2's sshd did not see the unknown user:\n%s", log)
	}
	sshMoveRefused(t, e, vm, "Permission denied (publickey)")
}

// sshMoveRefused: moving vm from host1 to host2 fails naming host2 and why,
// and leaves the guest running on host1 only, its heartbeat advancing.
func sshMoveRefused(t *testing.T, e *env, vm, why string) {
	t.Helper()
	before := heartbeat(t, vm)
	r := e.ferry("migrate", vm, "--to", "host2")
	out := r.stdout + r.stderr
	if r.code == 0 || !strings.Contains(out, "host2") || !strings.Contains(out, why) {
		t.Fatalf("migrate to host2: exit %d, want a failure naming host2 and %q:\n%s", r.code, why, out)
	}
	runsExactlyOn(t, vm, "1")
	if st := domstate(t, "2", vm); st != "" {
		t.Fatalf("%s is %q on host2 after the refused move", vm, st)
	}
	heartbeatAbove(t, vm, before, 30*time.Second)
	for _, row := range e.history(vm) {
		if row.State == journal.StateCompleted || row.State == journal.StateRunning || row.State == journal.StateFailed {
			t.Fatalf("journal row %s after the refused move: %+v", row.State, row)
		}
	}
}

// sshInventory copies ferry-ssh.yaml with every host URI passed through edit.
func sshInventory(t *testing.T, edit func(uri string) string) string {
	t.Helper()
	data, err := os.ReadFile(labInventory(t, "ferry-ssh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if k, uri, ok := strings.Cut(l, "uri: "); ok {
			l = k + "uri: " + edit(uri)
		}
		lines = append(lines, l)
	}
	p := filepath.Join(t.TempDir(), "ferry-ssh.yaml")
	writeFile(t, p, strings.Join(lines, "\n"), 0o644)
	return p
}

// sshClientWith writes an ssh wrapper like the lab's ($FERRY_LAB_ROOT/ssh/ssh)
// whose configuration checks host keys against knownHosts instead.
func sshClientWith(t *testing.T, dir, knownHosts string) string {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(labRoot, "ssh", "ssh_config"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^(\s*UserKnownHostsFile)\s.*$`)
	if !re.Match(cfg) {
		t.Fatalf("no UserKnownHostsFile in the lab's ssh_config:\n%s", cfg)
	}
	cfgPath := filepath.Join(dir, "ssh_config")
	writeFile(t, cfgPath, re.ReplaceAllString(string(cfg), "${1} "+knownHosts), 0o644)
	wrapper := filepath.Join(dir, "ssh")
	writeFile(t, wrapper, fmt.Sprintf("#!/bin/sh\nexec /usr/bin/ssh -F '%s' \"$@\"\n", cfgPath), 0o755)
	return wrapper
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// sshFingerprint is a public key's SHA256 fingerprint as sshd logs it.
func sshFingerprint(t *testing.T, pubFile string) string {
	t.Helper()
	data, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatalf("%v (hack/lab-ssh.sh makes it)", err)
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		t.Fatalf("%s: not a public key", pubFile)
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		t.Fatalf("%s: %v", pubFile, err)
	}
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// acceptedKey: the sshd log shows a login with that key.
func acceptedKey(log, fingerprint string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "Accepted publickey for root from ") && strings.HasSuffix(strings.TrimSpace(l), " "+fingerprint) {
			return true
		}
	}
	return false
}

// logMark is a position in a host's sshd log.
type logMark struct {
	path string
	off  int64
}

func sshdLogMark(t *testing.T, host string) logMark {
	t.Helper()
	p := filepath.Join(labRoot, "hosts", "host"+host, "log", "sshd.log")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("host%s sshd log: %v (hack/lab-up.sh starts an sshd per host)", host, err)
	}
	return logMark{path: p, off: fi.Size()}
}

// since is what the log gained after the mark.
func (m logMark) since(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < m.off {
		t.Fatalf("%s shrank", m.path)
	}
	return string(bytes.TrimSpace(data[m.off:]))
}
