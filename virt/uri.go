package virt

import (
	"fmt"
	"net/url"
	"strings"
)

var uriSchemes = map[string]bool{
	"qemu": true, "qemu+tcp": true, "qemu+tls": true, "qemu+ssh": true, "qemu+libssh": true,
	"qemu+libssh2": true, "qemu+unix": true, "test": true, "test+tcp": true,
}

// ValidateURI rejects strings that cannot be a libvirt connection URI, before
// libvirt tries (and, for some typos, silently connects somewhere else).
func ValidateURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil {
		return &Error{Op: "parse URI", Sentinel: ErrBadURI, Message: fmt.Sprintf("malformed libvirt URI %q: %v", uri, err)}
	}
	bad := func(why string) error {
		return &Error{Op: "parse URI", Sentinel: ErrBadURI,
			Message: fmt.Sprintf("malformed libvirt URI %q: %s (expected e.g. qemu+tcp://host/system)", uri, why)}
	}
	if !uriSchemes[u.Scheme] {
		return bad(fmt.Sprintf("unknown scheme %q", u.Scheme))
	}
	remote := strings.Contains(u.Scheme, "+") && u.Scheme != "qemu+unix"
	if remote && u.Hostname() == "" {
		return bad("no host name")
	}
	if strings.HasPrefix(u.Scheme, "qemu") && u.Path != "/system" && u.Path != "/session" {
		return bad(fmt.Sprintf("path %q is neither /system nor /session", u.Path))
	}
	if u.Scheme == "qemu+ssh" {
		q := u.Query()
		for _, k := range []string{"known_hosts", "known_hosts_verify"} {
			if q.Has(k) {
				// libvirt passes them to libssh and libssh2 only: silently ignored here.
				return bad(fmt.Sprintf("%s is read only by qemu+libssh and qemu+libssh2; with qemu+ssh the ssh client reads its own known_hosts (set it in ~/.ssh/config, or give command= an ssh wrapper using -o UserKnownHostsFile=...)", k))
			}
		}
	}
	if p := u.Port(); p != "" {
		for _, c := range p {
			if c < '0' || c > '9' {
				return bad("port is not a number")
			}
		}
	}
	return nil
}

// URIHost returns the host part of a libvirt URI ("" for local URIs).
func URIHost(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// Transport is how a libvirt URI reaches its daemon: "tcp", "tls", "ssh",
// "libssh", "libssh2", "unix" (local socket), or "" for an unparsable URI.
// A plain remote qemu:// URI is TLS, as libvirt reads it.
func Transport(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	if _, t, ok := strings.Cut(u.Scheme, "+"); ok {
		return t
	}
	if u.Host != "" {
		return "tls"
	}
	return "unix"
}

// clientParams are URI parameters naming files or settings of the machine
// that opens the connection (libvirt's pkipath, ssh's keyfile, known_hosts
// and command, the ssh binary to run): meaningful to ferry, not to a host it
// hands the URI to.
var clientParams = []string{"pkipath", "keyfile", "known_hosts", "known_hosts_verify", "sshauth", "no_verify", "no_tty", "command"}

// PeerURI is the URI a source host's libvirtd uses to reach the
// destination in a peer-to-peer migration: ferry's URI without the
// parameters that name ferry's own credentials (the host uses its own).
func PeerURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.RawQuery == "" {
		return uri
	}
	q := u.Query()
	for _, p := range clientParams {
		q.Del(p)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
