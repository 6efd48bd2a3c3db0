package virt

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateURI(t *testing.T) {
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"qemu+tcp://127.0.10.2/system", true},
		{"qemu:///system", true},
		{"qemu+ssh://root@host-b/system", true},
		{"qemu+tcp://127.0.10.2:16509/system", true},
		{"test:///default", true},
		{"qemu+tcp:///system", false},          // no host
		{"qemu+tcp://127.0.10.2/sys", false},   // bad path
		{"xen+tcp://127.0.10.2/system", false}, // scheme
		{"127.0.10.2", false},
		{"qemu+tcp://127.0.10.2:abc/system", false},
		{"qemu+tcp://[::1/system", false},
	} {
		err := ValidateURI(tc.uri)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateURI(%q) = %v, want ok=%v", tc.uri, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadURI) {
			t.Errorf("ValidateURI(%q) error %v does not wrap ErrBadURI", tc.uri, err)
		}
	}
}

func TestTransportAndPeerURI(t *testing.T) {
	for uri, want := range map[string]string{
		"qemu+tcp://h/system": "tcp", "qemu+tls://h/system?pkipath=/x": "tls", "qemu+ssh://root@h/system": "ssh",
		"qemu:///system": "unix", "qemu://h/system": "tls", "qemu+libssh2://h/system": "libssh2",
	} {
		if got := Transport(uri); got != want {
			t.Errorf("Transport(%q) = %q, want %q", uri, got, want)
		}
	}
	for uri, want := range map[string]string{
		"qemu+tls://h/system?pkipath=/var/lib/ferry/pki":                        "qemu+tls://h/system",
		"qemu+libssh2://root@h/system?keyfile=/k&known_hosts=/kh&mode=direct":   "qemu+libssh2://root@h/system?mode=direct",
		"qemu+ssh://root@h:2222/system?keyfile=/k&command=/w&proxy=native":      "qemu+ssh://root@h:2222/system?proxy=native",
		"qemu+tcp://127.0.10.2/system":                                          "qemu+tcp://127.0.10.2/system",
		"qemu+tls://h/system?no_verify=1&pkipath=/p&socket=/run/libvirt/x.sock": "qemu+tls://h/system?socket=%2Frun%2Flibvirt%2Fx.sock",
	} {
		if got := PeerURI(uri); got != want {
			t.Errorf("PeerURI(%q) = %q, want %q", uri, got, want)
		}
	}
}

func TestSSHKnownHostsRefused(t *testing.T) {
	if err := ValidateURI("qemu+ssh://root@h/system?known_hosts=/kh"); err == nil || !strings.Contains(err.Error(), "read only by qemu+libssh") {
		t.Fatalf("known_hosts on qemu+ssh: %v", err)
	}
	if err := ValidateURI("qemu+libssh2://root@h/system?known_hosts=/kh"); err != nil {
		t.Fatalf("known_hosts on qemu+libssh2: %v", err)
	}
}
