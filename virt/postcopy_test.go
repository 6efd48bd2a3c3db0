package virt

import (
	"errors"
	"testing"
)

func TestQEMUMigrateURI(t *testing.T) {
	cases := []struct{ in, want string }{
		{"tcp://127.0.10.2:49215", "tcp:127.0.10.2:49215"},
		{"tcp://host-b:49152", "tcp:host-b:49152"},
		{"tcp://[fd00::2]:49215", "tcp:[fd00::2]:49215"},
		{"tcp://127.0.10.2", ""},
		{"tcp://127.0.10.2:0", ""},
		{"tcp://127.0.10.2:99999", ""},
		{"unix:///run/x.sock", ""},
		{"tcp://:49215", ""},
		{"%zz", ""},
	}
	for _, c := range cases {
		got, err := QEMUMigrateURI(c.in)
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("QEMUMigrateURI(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if err != nil && !errors.Is(err, ErrBadURI) {
			t.Errorf("QEMUMigrateURI(%q): error %v is not ErrBadURI", c.in, err)
		}
	}
}
