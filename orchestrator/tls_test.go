package orchestrator

import (
	"strings"
	"testing"

	"github.com/ferryvm/ferry/inventory"
)

func TestDecideTLS(t *testing.T) {
	files := func(names ...string) tlsOffer {
		o := tlsOffer{Dir: "/etc/pki/qemu", Files: map[string]bool{}}
		for _, n := range names {
			o.Files[n] = true
		}
		return o
	}
	both := files("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
	none := files()
	serverOnly := files("ca-cert.pem", "server-cert.pem", "server-key.pem")
	unknown := tlsOffer{Dir: "/etc/pki/qemu", Unknown: "cannot look at /etc/pki/qemu: no storage API"}
	host := func(name, pol string) inventory.Host { return inventory.Host{Name: name, MigrationTLS: pol} }
	for _, tt := range []struct {
		name           string
		src, dst       inventory.Host
		srcOff, dstOff tlsOffer
		loopback       bool
		use, clear     bool
		refuse, detail string
	}{
		{"preferred, both ready", host("a", ""), host("b", ""), both, both, false, true, false, "", "encrypted"},
		{"preferred, destination lacks its server files", host("a", ""), host("b", ""), both, none, false, false, true, "", "b: /etc/pki/qemu lacks ca-cert.pem, server-cert.pem, server-key.pem"},
		{"preferred, source is only a server", host("a", ""), host("b", ""), serverOnly, both, true, false, false, "", "a: /etc/pki/qemu lacks client-cert.pem, client-key.pem"},
		{"loopback: no warning", host("a", ""), host("b", ""), none, none, true, false, false, "", "not available"},
		{"off on one side", host("a", "off"), host("b", ""), both, both, false, false, true, "", "off in the inventory"},
		{"required and ready", host("a", "required"), host("b", ""), both, both, false, true, false, "", "encrypted"},
		{"required, the destination needs only its server files", host("a", ""), host("b", "required"), both, serverOnly.withUnknown(""), false, true, false, "", "encrypted"},
		{"required, destination cannot", host("a", ""), host("b", "required"), both, none, false, false, false, "b: /etc/pki/qemu lacks", ""},
		{"required, cannot look", host("a", "required"), host("b", ""), unknown, both, false, false, false, "no storage API", ""},
		{"required against off", host("a", "required"), host("b", "off"), both, both, false, false, false, "required on one host and off on the other", ""},
	} {
		c := decideTLS(tt.src, tt.dst, tt.srcOff, tt.dstOff, tt.loopback)
		if c.Use != tt.use || c.Clear != tt.clear || (tt.refuse == "") != (c.Refuse == "") || !strings.Contains(c.Refuse, tt.refuse) || !strings.Contains(c.Detail, tt.detail) {
			t.Errorf("%s: %+v, want use=%v clear=%v refuse %q detail %q", tt.name, c, tt.use, tt.clear, tt.refuse, tt.detail)
		}
	}
}

func (o tlsOffer) withUnknown(u string) tlsOffer { o.Unknown = u; return o }

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.10.2": true, "::1": true, "localhost": true, "10.0.0.2": false, "host-b": false, "": false} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v", addr, got)
		}
	}
}
