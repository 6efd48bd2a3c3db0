package units

import "testing"

func TestIEC(t *testing.T) {
	for b, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB", 1 << 62: "4.0 EiB"} {
		if got := IEC(b); got != want {
			t.Errorf("IEC(%d) = %q, want %q", b, got, want)
		}
	}
	if got := MiB(512<<20 + 1); got != "512 MiB" {
		t.Errorf("MiB = %q", got)
	}
}
