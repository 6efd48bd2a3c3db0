//go:build e2e

package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

// Migration TLS (issue 13): the lab's hosts have certificates, so by default
// (migration_tls: preferred) guest memory crosses encrypted; with it off it
// crosses in clear; required without certificates is refused.
func TestMigrationStreamIsEncrypted(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-tls-stream"
	newGuest(t, vm, guestSpec{memMiB: 128, wssMiB: 32, rate: 2000})
	before := heartbeat(t, vm)

	c := startCapture(t, "2")
	res, r := migrateJSON(t, e, vm, "--to", "host2")
	wire := c.payload(t)
	if r.code != 0 || res.State != journal.StateCompleted || !res.Live.MigrationTLS {
		t.Fatalf("exit %d, state %s, migration_tls %v: %s", r.code, res.State, res.Live.MigrationTLS, r.stderr)
	}
	if len(wire) < 4<<20 {
		t.Fatalf("captured %d bytes of migration stream: the capture missed it", len(wire))
	}
	for _, m := range plainMarkers {
		if bytes.Contains(wire, m) {
			t.Fatalf("the encrypted stream carries %q in clear", m)
		}
	}
	if n := tlsRecords(wire); n < 100 {
		t.Fatalf("%d TLS records in %d bytes: not a TLS stream", n, len(wire))
	}
	heartbeatAbove(t, vm, before, 30*time.Second)

	// The same move back with migration TLS off: the stream is plain.
	e.config = labInventory(t, "ferry-plain.yaml")
	before = heartbeat(t, vm)
	c = startCapture(t, "1")
	res, r = migrateJSON(t, e, vm, "--to", "host1")
	wire = c.payload(t)
	if r.code != 0 || res.State != journal.StateCompleted || res.Live.MigrationTLS {
		t.Fatalf("plain: exit %d, state %s, migration_tls %v", r.code, res.State, res.Live.MigrationTLS)
	}
	found := false
	for _, m := range plainMarkers {
		found = found || bytes.Contains(wire, m)
	}
	if !found {
		t.Fatalf("the plain stream (%d bytes) shows none of %q", len(wire), plainMarkers)
	}
	heartbeatAbove(t, vm, before, 30*time.Second)
}

// labInventory is one of the inventories lab-up writes.
func labInventory(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(labRoot, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (hack/lab-up.sh writes it)", p, err)
	}
	return p
}

// inventoryWith copies the lab inventory with extra lines under host n's entry.
func inventoryWith(t *testing.T, n string, lines ...string) string {
	t.Helper()
	data, err := os.ReadFile(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	anchor := "migration_address: " + labNet() + "." + n + "\n"
	if !strings.Contains(string(data), anchor) {
		t.Fatalf("no %q in %s", anchor, labConfig)
	}
	extra := ""
	for _, l := range lines {
		extra += "    " + l + "\n"
	}
	p := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), anchor, anchor+extra, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// migration_tls: required on a host whose certificates are not there is
// refused before anything moves, naming the host, the directory and the fix;
// required where they are moves encrypted.
func TestMigrationTLSRequired(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-tls-required"
	newGuest(t, vm, guestSpec{})
	e.config = inventoryWith(t, "2", "migration_tls: required", "migration_tls_dir: /etc/pki/nowhere")
	r := e.ferry("migrate", vm, "--to", "host2")
	if r.code != 2 || !strings.Contains(r.stderr, "migration_tls is required") || !strings.Contains(r.stderr, "host2") ||
		!strings.Contains(r.stderr, "/etc/pki/nowhere") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	runsExactlyOn(t, vm, "1")
	if rows := e.history(vm); len(rows) != 1 || rows[0].State != journal.StateRefused {
		t.Fatalf("journal %+v", rows)
	}
	e.config = inventoryWith(t, "2", "migration_tls: required")
	res, r2 := migrateJSON(t, e, vm, "--to", "host2")
	if r2.code != 0 || !res.Live.MigrationTLS {
		t.Fatalf("required with certificates: exit %d, migration_tls %v: %s", r2.code, res.Live.MigrationTLS, r2.stderr)
	}
	runsExactlyOn(t, vm, "2")
}

// Bad client credentials fail with a message naming the host and the file.
func TestTLSCredentialErrors(t *testing.T) {
	caCert, caKey := labCA(t)
	for _, tc := range []struct {
		name string
		make func(dir string)
		want string
	}{
		{"expired client certificate", func(dir string) {
			writeCert(t, dir, caCert, caKey, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
		}, "clientcert.pem has expired"},
		{"client certificate of another CA", func(dir string) {
			otherCert, otherKey := newCA(t)
			writeCert(t, dir, otherCert, otherKey, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
		}, "clientcert.pem failed validation against"},
		{"no CA certificate", func(dir string) {}, "cacert.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.name != "no CA certificate" {
				copyFile(t, filepath.Join(labRoot, "pki", "ca-cert.pem"), filepath.Join(dir, "cacert.pem"))
			}
			tc.make(dir)
			e := newEnv(t)
			inv, err := os.ReadFile(labConfig)
			if err != nil {
				t.Fatal(err)
			}
			e.config = filepath.Join(t.TempDir(), "ferry.yaml")
			bad := strings.ReplaceAll(string(inv), "pkipath="+filepath.Join(labRoot, "pki", "ferry"), "pkipath="+dir)
			if err := os.WriteFile(e.config, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			r := e.ferry("hosts", "host2")
			out := r.stdout + r.stderr
			if r.code == 0 || !strings.Contains(out, "host2") || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want an error naming host2 and %s:\n%s", r.code, tc.want, out)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// labCA reads the lab CA's certificate and key (hack/lab-pki.sh).
func labCA(t *testing.T) (*x509.Certificate, any) {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(labRoot, "pki", name))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := pem.Decode(b)
		if p == nil {
			t.Fatalf("%s: no PEM block", name)
		}
		return p.Bytes
	}
	cert, err := x509.ParseCertificate(read("ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(read("ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// newCA makes a CA the lab does not know.
func newCA(t *testing.T) (*x509.Certificate, any) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the lab CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// writeCert writes clientcert.pem and clientkey.pem signed by the given CA.
func writeCert(t *testing.T, dir string, ca *x509.Certificate, caKey any, from, until time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "ferry-test"},
		NotBefore: from, NotAfter: until, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "clientcert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "clientkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A move over each transport ferry is given: plain TCP (ferry-tcp.yaml);
// TLS is the lab's default inventory, which every other test uses.
func TestMoveOverTCP(t *testing.T) {
	e := newEnv(t)
	e.config = labInventory(t, "ferry-tcp.yaml")
	const vm = "e2e-over-tcp"
	newGuest(t, vm, guestSpec{})
	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2")
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before, 30*time.Second)
}
