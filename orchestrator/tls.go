package orchestrator

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/virt"
)

// Migration TLS: QEMU encrypts the migration streams when both hosts have
// certificates in their migrate_tls_x509_cert_dir: the source acts as the
// TLS client, the destination as the server. ferry looks for the files
// through libvirt's storage API (a transient pool over the directory: no
// ssh, no agent), then a pure rule decides from the hosts' policies.

// ErrMigrationTLS: migration TLS is required but a host cannot do it.
var ErrMigrationTLS = errors.New("migration TLS required but not available")

// The files QEMU's x509 credentials read from the directory.
var (
	tlsServerFiles = []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"}
	tlsClientFiles = []string{"ca-cert.pem", "client-cert.pem", "client-key.pem"}
)

// tlsOffer is what a host's certificate directory holds.
type tlsOffer struct {
	Dir     string
	Files   map[string]bool
	Unknown string // why the directory could not be read ("" when it was)
}

func (o tlsOffer) has(files []string) bool {
	for _, f := range files {
		if !o.Files[f] {
			return false
		}
	}
	return o.Unknown == ""
}

// missing names what the host lacks to play a role.
func (o tlsOffer) missing(files []string) string {
	if o.Unknown != "" {
		return o.Unknown
	}
	var out []string
	for _, f := range files {
		if !o.Files[f] {
			out = append(out, f)
		}
	}
	return fmt.Sprintf("%s lacks %s", o.Dir, strings.Join(out, ", "))
}

// probeTLS lists the host's migration certificate directory. Two moves
// probing one host at once share ferry's transient pool over it, and the
// first to finish destroys it under the other: a failed look is retried, so
// that a race never quietly turns TLS off.
func probeTLS(h virt.Host, dir string) tlsOffer {
	var o tlsOffer
	for range 3 {
		if o = probeTLSOnce(h, dir); o.Unknown == "" {
			break
		}
	}
	return o
}

func probeTLSOnce(h virt.Host, dir string) tlsOffer {
	o := tlsOffer{Dir: dir, Files: map[string]bool{}}
	st, err := virt.StorageOf(h)
	if err != nil {
		o.Unknown = "cannot look at " + dir + ": " + err.Error()
		return o
	}
	p, release, err := st.PoolForDir(dir, false)
	if err != nil {
		o.Unknown = "cannot look at " + dir + ": " + err.Error()
		return o
	}
	defer release()
	vols, err := p.ListVolumes()
	if err != nil {
		o.Unknown = "cannot list " + dir + ": " + err.Error()
		return o
	}
	for _, v := range vols {
		o.Files[v.Name] = true
	}
	return o
}

// tlsChoice is how a live move treats its migration streams.
type tlsChoice struct {
	Use    bool
	Refuse string // a refusal's words; "" when the move may go on
	Detail string // the check's words
	Clear  bool   // memory crosses a link that is not loopback unencrypted
}

// decideTLS applies both hosts' policies (inventory migration_tls) to what
// their directories offer: TLS when neither host says off and the source
// can be a client and the destination a server; required on either side
// refuses a move that cannot have it, or that the other side turns off.
func decideTLS(src, dst inventory.Host, srcOffer, dstOffer tlsOffer, loopback bool) tlsChoice {
	sp, dp := src.TLSPolicy(), dst.TLSPolicy()
	required := sp == inventory.TLSRequired || dp == inventory.TLSRequired
	off := sp == inventory.TLSOff || dp == inventory.TLSOff
	can := srcOffer.has(tlsClientFiles) && dstOffer.has(tlsServerFiles)
	var why string
	switch {
	case !srcOffer.has(tlsClientFiles):
		why = src.Name + ": " + srcOffer.missing(tlsClientFiles)
	case !dstOffer.has(tlsServerFiles):
		why = dst.Name + ": " + dstOffer.missing(tlsServerFiles)
	}
	switch {
	case required && off:
		return tlsChoice{Refuse: fmt.Sprintf("migration_tls is required on one host and off on the other (%s: %s, %s: %s): make them agree in the inventory", src.Name, sp, dst.Name, dp)}
	case required && !can:
		return tlsChoice{Refuse: fmt.Sprintf("migration_tls is required but %s: put ca-cert.pem, client-cert.pem and client-key.pem in the source's and ca-cert.pem, server-cert.pem and server-key.pem in the destination's migrate_tls_x509_cert_dir (qemu.conf), or set migration_tls: preferred", why)}
	case can && !off:
		return tlsChoice{Use: true, Detail: "guest memory encrypted (TLS)"}
	}
	c := tlsChoice{Clear: !loopback}
	switch {
	case off:
		c.Detail = fmt.Sprintf("migration TLS off in the inventory (%s: %s, %s: %s)", src.Name, sp, dst.Name, dp)
	default:
		c.Detail = "migration TLS not available: " + why
	}
	if c.Clear {
		c.Detail = "guest memory crosses the network unencrypted: " + c.Detail
	}
	return c
}

// loopbackAddr reports a host name or address of this machine's loopback.
func loopbackAddr(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
