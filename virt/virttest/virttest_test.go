package virttest_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

const uri = "qemu+tcp://127.0.10.1/system"

var errBoom = &virt.Error{Op: "test", Sentinel: virt.ErrUnreachable, Message: "connection reset"}

func TestDialedHostHasStorageOnlyWhenAttached(t *testing.T) {
	cl := virttest.NewCluster()
	h := cl.AddHost(uri, virt.Capacity{CPUs: 2})
	conn, err := cl.Dial(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := virt.StorageOf(conn); !errors.Is(err, virt.ErrNoSupport) {
		t.Fatalf("a host without storage: %v, want ErrNoSupport", err)
	}
	s := virttest.NewStorage(true)
	s.AddPool("default", "/img", 1<<30)
	h.AttachStorage(s)
	conn, err = cl.Dial(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	st, err := virt.StorageOf(conn)
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := st.ListPools(); err != nil || len(ps) != 1 || ps[0].Path != "/img" {
		t.Fatalf("pools %+v %v", ps, err)
	}
	// Still the same host on the domain side.
	h.AddDomain("web", "u-1", 1<<20, virt.StateRunning)
	if _, err := conn.LookupDomain("web"); err != nil || conn.URI() != uri {
		t.Fatalf("lookup through the storage host: %v", err)
	}
}

func TestHostAndDomainHooks(t *testing.T) {
	cl := virttest.NewCluster()
	h := cl.AddHost(uri, virt.Capacity{CPUs: 2, FreeMemoryBytes: 1 << 30})
	d := h.AddDomain("web", "u-1", 1<<20, virt.StateRunning)

	calls := 0
	h.IdentityFn = func(id virt.Identity) (virt.Identity, error) {
		if calls++; calls > 1 {
			return virt.Identity{}, errBoom
		}
		return id, nil
	}
	if id, err := h.Identity(); err != nil || id.UUID != h.UUID {
		t.Fatalf("first Identity: %+v %v", id, err)
	}
	if _, err := h.Identity(); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("second Identity: %v", err)
	}

	h.CapacityFn = func(c virt.Capacity) (virt.Capacity, error) { return virt.Capacity{}, errBoom }
	if _, err := h.Capacity(); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("Capacity: %v", err)
	}
	h.CapacityFn = nil
	if c, err := h.Capacity(); err != nil || c.CPUs != 2 {
		t.Fatalf("Capacity without the hook: %+v %v", c, err)
	}

	d.InfoFn = func(info virt.DomainInfo) (virt.DomainInfo, error) {
		if info.State != virt.StatePaused {
			return info, nil
		}
		return virt.DomainInfo{}, errBoom
	}
	if info, err := d.Info(); err != nil || info.Name != "web" {
		t.Fatalf("Info passed through: %+v %v", info, err)
	}
	d.SetState(virt.StatePaused, "user")
	if _, err := d.Info(); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("Info: %v", err)
	}

	d.XMLFn = func(bool) (string, error) { return "<domain><name>web</name></domain>", nil }
	if x, err := d.XML(false); err != nil || x != "<domain><name>web</name></domain>" {
		t.Fatalf("XML %q %v", x, err)
	}
}

func TestStorageCopyAndFailures(t *testing.T) {
	ctx := context.Background()
	s := virttest.NewStorage(true)
	s.AddPool("default", "/img", 1<<30)
	data := make([]byte, 3*4096)
	data[5000] = 1 // the second block only
	s.Put("/img/a.raw", data, "raw")

	src, err := s.LookupVolumeByPath("/img/a.raw")
	if err != nil {
		t.Fatal(err)
	}
	if vi, _ := src.Info(); vi.AllocatedBytes != 4096 || vi.PhysicalBytes != uint64(len(data)) || vi.Pool != "default" {
		t.Fatalf("%+v", vi)
	}
	pl, _ := s.LookupPool("default")
	dst, err := pl.CreateVolume(libvirtxml.StorageVolume{Name: "b.raw", Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(len(data))}})
	if err != nil {
		t.Fatal(err)
	}
	var ops []virttest.StorageOp
	s.CallFn = func(c virttest.StorageCall) error {
		ops = append(ops, c.Op)
		return nil
	}
	up, err := dst.Upload(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := src.Download(ctx, up, true)
	if err != nil || up.Close() != nil {
		t.Fatal(err)
	}
	if st.DataBytes != 4096 || st.HoleBytes != 8192 || !bytes.Equal(s.Files()["/img/b.raw"], data) {
		t.Fatalf("stats %+v", st)
	}
	want := []virttest.StorageOp{virttest.OpUpload, virttest.OpDownload, virttest.OpHole, virttest.OpWrite, virttest.OpHole, virttest.OpClose}
	if len(ops) != len(want) {
		t.Fatalf("calls %v, want %v", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("calls %v, want %v", ops, want)
		}
	}

	// A failing call changes nothing.
	s.CallFn = virttest.FailCall(virttest.OpDelete, "/img/b.raw", errBoom)
	if err := dst.Delete(); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("Delete: %v", err)
	}
	if _, ok := s.Files()["/img/b.raw"]; !ok {
		t.Fatal("a failed delete removed the file")
	}
	if err := src.Delete(); err != nil {
		t.Fatalf("another path: %v", err)
	}

	// Failing mid-upload: the position tells how far it got.
	s.CallFn = func(c virttest.StorageCall) error {
		if c.Op == virttest.OpWrite && c.Offset > 0 {
			return errBoom
		}
		return nil
	}
	up, _ = dst.Upload(ctx, true)
	if _, err := up.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(make([]byte, 10)); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("second write: %v", err)
	}

	// Transient pools come and go with PoolForDir's release.
	s.CallFn = nil
	if _, _, err := s.PoolForDir("/nowhere", false); !errors.Is(err, virt.ErrNotFound) {
		t.Fatalf("a missing directory: %v", err)
	}
	p, release, err := s.PoolForDir("/new", true)
	if err != nil || s.Transient() != 1 {
		t.Fatalf("%v, %d transient", err, s.Transient())
	}
	if info, _ := p.Info(); info.Path != "/new" {
		t.Fatalf("%+v", info)
	}
	if err := release(); err != nil || s.Transient() != 0 {
		t.Fatalf("%v, %d transient", err, s.Transient())
	}
}
