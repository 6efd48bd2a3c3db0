package virt

import (
	"errors"
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
