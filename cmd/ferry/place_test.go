package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/placement"
)

func TestPlaceCommandInput(t *testing.T) {
	state := filepath.Join(t.TempDir(), "ferry.db")
	empty := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(empty, []byte("hosts: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		args []string
		code int
	}{
		{[]string{"place"}, 2},
		{[]string{"place", "a", "b"}, 2},
		{[]string{"place", "web-01", "--avoid-label", "rack"}, 2},
		{[]string{"place", "web-01", "--prefer-label", "=x"}, 2},
		{[]string{"place", "web-01", "--config", empty}, 2}, // no inventory to search
		{[]string{"place", "bad name!", "--config", empty}, 2},
	} {
		if _, code := run(t, state, "", s.args...); code != s.code {
			t.Fatalf("ferry %s: exit %d, want %d", strings.Join(s.args, " "), code, s.code)
		}
	}
}

func TestPrintPlacement(t *testing.T) {
	cand := func(name string, freeGiB uint64) placement.Candidate {
		return placement.Candidate{Name: name, FreeMemoryBytes: freeGiB << 30, CPUs: 4, CPUCompatible: true, Reachable: true}
	}
	src := cand("host1", 16)
	src.IsSource = true
	maint := cand("host4", 16)
	maint.InMaintenance, maint.MaintenanceNote = true, "drain"
	p := placement.Place(placement.VMNeeds{Name: "web-01", MemoryBytes: 1 << 30, VCPUs: 1},
		[]placement.Candidate{src, cand("host2", 4), cand("host3", 8), maint}, placement.Options{})
	p.Source = "host1"
	var b bytes.Buffer
	if err := printPlacement(&b, &p); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log(out)
	for _, want := range []string{"place on host3", "host3  8.0 GiB", "chosen", "host1", "source: the VM runs here", "in maintenance: drain"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
