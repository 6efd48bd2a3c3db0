package virt

import "testing"

func TestSparseStreamsGate(t *testing.T) {
	for v, want := range map[uint32]bool{0: false, 3003000: false, 3004000: true, 9005000: true, 9006000: false, 10000000: false, 10001000: true, 11003000: true} {
		if got, why := SparseStreamsFor(v); got != want {
			t.Errorf("%d: %v (%s), want %v", v, got, why, want)
		}
	}
}

func TestParseVolumeXML(t *testing.T) {
	info, err := ParseVolumeXML(`<volume type='file'>
  <name>web.qcow2</name>
  <capacity unit='bytes'>4294967296</capacity>
  <allocation unit='bytes'>105123840</allocation>
  <physical unit='bytes'>105185280</physical>
  <target><path>/var/lib/libvirt/images/web.qcow2</path><format type='qcow2'/></target>
  <backingStore><path>/var/lib/libvirt/images/base.qcow2</path><format type='qcow2'/></backingStore>
</volume>`)
	if err != nil {
		t.Fatal(err)
	}
	want := VolumeInfo{Name: "web.qcow2", Path: "/var/lib/libvirt/images/web.qcow2", Format: "qcow2", CapacityBytes: 4 << 30,
		AllocatedBytes: 105123840, PhysicalBytes: 105185280, BackingPath: "/var/lib/libvirt/images/base.qcow2", BackingFormat: "qcow2"}
	if info != want {
		t.Fatalf("%+v", info)
	}
	info, _ = ParseVolumeXML(`<volume><name>n</name><capacity unit='KiB'>2</capacity><target><format type='raw'/></target></volume>`)
	if info.CapacityBytes != 2048 || info.PhysicalBytes != 2048 {
		t.Fatalf("%+v", info)
	}
}
