package coldmove

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

func TestDigestIgnoresHowZerosTravel(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	size := 5*DigestBlockBytes + 12345
	data := make([]byte, size)
	for _, off := range []int{0, DigestBlockBytes - 10, 3*DigestBlockBytes + 4096, size - 100} {
		r.Read(data[off : off+50])
	}
	dense := NewDigest()
	dense.Write(data)
	want := dense.Sum()
	for _, chunk := range []int{1, 4096, 65536, 3 << 20} {
		d := NewDigest()
		for off := 0; off < size; off += chunk {
			end := min(off+chunk, size)
			c := data[off:end]
			if len(bytes.TrimLeft(c, "\x00")) == 0 {
				d.Hole(int64(len(c)))
			} else {
				d.Write(c)
			}
		}
		if got := d.Sum(); got != want {
			t.Fatalf("chunk %d: %s, want %s", chunk, got, want)
		}
	}
	other := append([]byte(nil), data...)
	other[2*DigestBlockBytes+7] = 1
	d := NewDigest()
	d.Write(other)
	if d.Sum() == want {
		t.Fatal("different content, same digest")
	}
	// Length matters: trailing zeros are content too.
	d = NewDigest()
	d.Write(data)
	d.Hole(4096)
	if d.Sum() == want {
		t.Fatal("longer file, same digest")
	}
	if !strings.HasPrefix(want, DigestPrefix) {
		t.Fatal(want)
	}
}

func TestRunStepsUndoesInReverse(t *testing.T) {
	var log []string
	step := func(name string, fail bool) Step {
		return Step{Name: name,
			Do: func(context.Context) error {
				log = append(log, "do "+name)
				if fail {
					return errors.New("boom")
				}
				return nil
			},
			Undo: func(context.Context) error { log = append(log, "undo "+name); return nil }}
	}
	err := RunSteps(context.Background(), []Step{step("a", false), step("b", false), step("c", true), step("d", false)}, nil)
	rb, ok := IsRollback(err)
	if !ok || rb.Step != "c" || !rb.Complete() {
		t.Fatalf("err %v", err)
	}
	want := []string{"do a", "do b", "do c", "undo b", "undo a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("%v, want %v", log, want)
	}

	// A step whose failure may leave something behind is undone too, and a
	// failing undo makes the rollback incomplete.
	log = nil
	c := step("c", true)
	c.UndoOnFailure = true
	a := step("a", false)
	a.Undo = func(context.Context) error { return errors.New("host gone") }
	err = RunSteps(context.Background(), []Step{a, c}, nil)
	rb, _ = IsRollback(err)
	if rb == nil || rb.Complete() || !reflect.DeepEqual(log, []string{"do a", "do c", "undo c"}) {
		t.Fatalf("err %v log %v", err, log)
	}

	// Cancelled between steps: what was done is undone.
	log = nil
	ctx, cancel := context.WithCancel(context.Background())
	b := step("b", false)
	b.Do = func(context.Context) error { log = append(log, "do b"); cancel(); return nil }
	err = RunSteps(ctx, []Step{step("a", false), b, step("c", false)}, nil)
	if _, ok := IsRollback(err); !ok || !reflect.DeepEqual(log, []string{"do a", "do b", "undo b", "undo a"}) {
		t.Fatalf("err %v log %v", err, log)
	}
}

func TestRewriteMapsDisksAndNVRAM(t *testing.T) {
	x := testXML("web")
	out, err := Rewrite(x, Mapping{Paths: map[string]string{
		"/var/lib/libvirt/images/web-vda.qcow2":   "/data/pool/web-vda.qcow2",
		"/srv/vms/web-vdb.img":                    "/var/lib/libvirt/images/web-vdb.img",
		"/var/lib/libvirt/qemu/nvram/web_VARS.fd": "/var/lib/libvirt/qemu/nvram/web_VARS.fd",
	}})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := virt.ParseSpec(out)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Disks[0].Source != "/data/pool/web-vda.qcow2" || spec.Disks[1].Source != "/var/lib/libvirt/images/web-vdb.img" || spec.UUID != testUUID {
		t.Fatalf("%+v", spec)
	}
	if !strings.Contains(out, "OVMF_CODE_4M.fd") || !strings.Contains(out, "<readonly>") {
		t.Fatalf("lost parts of the definition:\n%s", out)
	}
}

func TestLogDestName(t *testing.T) {
	taken := map[string]bool{"web.log": true, "web.log.from-host1": true}
	if got := LogDestName("db.log", "host1", taken); got != "db.log" {
		t.Fatal(got)
	}
	if got := LogDestName("web.log", "host1", taken); got != "web.log.from-host1.2" {
		t.Fatal(got)
	}
}

// lab builds a source with a qcow2 disk in the default pool, a raw disk
// outside any pool, NVRAM and two log files; and an empty destination.
func lab(t *testing.T, dstAvail uint64) (src, dst *virttest.Storage, srcHost, dstHost *fakeHost, dom *fakeDomain) {
	t.Helper()
	src, dst = virttest.NewStorage(true), virttest.NewStorage(true)
	src.AddPool("default", "/var/lib/libvirt/images", 1<<40)
	dst.AddPool("default", "/var/lib/libvirt/images", dstAvail)
	src.Put("/var/lib/libvirt/images/web-vda.qcow2", pattern(1<<20, 1, 0, 300000), "qcow2")
	src.Put("/srv/vms/web-vdb.img", pattern(4<<20, 2, 2<<20), "raw")
	src.Put("/var/lib/libvirt/qemu/nvram/web_VARS.fd", pattern(128<<10, 3, 0, 64<<10), "raw")
	src.Put("/var/log/libvirt/qemu/web.log", []byte("boot\n"), "raw")
	src.Put("/var/log/libvirt/qemu/web.log.0", []byte("older\n"), "raw")
	src.Put("/var/log/libvirt/qemu/webserver.log", []byte("not ours\n"), "raw")
	dst.Put("/var/log/libvirt/qemu/web.log", []byte("a previous stay\n"), "raw")
	srcHost, dstHost = newFakeHost(), newFakeHost()
	d, _ := srcHost.DefineXML(testXML("web"))
	return src, dst, srcHost, dstHost, d.(*fakeDomain)
}

func TestPlan(t *testing.T) {
	src, dst, _, _, _ := lab(t, 1<<30)
	p, err := BuildPlan(testXML("web"), src, dst, PlanOptions{SourceName: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Problems) > 0 {
		t.Fatal(p.Problems)
	}
	var got []string
	for _, a := range p.Artifacts {
		got = append(got, string(a.Kind)+" "+a.SrcPath+" -> "+a.DstPath)
	}
	want := []string{
		"disk /var/lib/libvirt/images/web-vda.qcow2 -> /var/lib/libvirt/images/web-vda.qcow2",
		"disk /srv/vms/web-vdb.img -> /var/lib/libvirt/images/web-vdb.img",
		"nvram /var/lib/libvirt/qemu/nvram/web_VARS.fd -> /var/lib/libvirt/qemu/nvram/web_VARS.fd",
		"log /var/log/libvirt/qemu/web.log -> /var/log/libvirt/qemu/web.log.from-host1",
		"log /var/log/libvirt/qemu/web.log.0 -> /var/log/libvirt/qemu/web.log.0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("plan\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.Artifacts[0].Format != "qcow2" || !p.Sparse || p.BytesToMove >= p.TotalBytes {
		t.Fatalf("format %s sparse %v bytes %d of %d", p.Artifacts[0].Format, p.Sparse, p.BytesToMove, p.TotalBytes)
	}
	if src.Transient() != 0 || dst.Transient() != 0 {
		t.Fatal("plan left transient pools behind")
	}

	// Dense when one end lacks sparse streams: every byte of the files moves.
	dense := virttest.NewStorage(false)
	dense.AddPool("default", "/var/lib/libvirt/images", 1<<30)
	p, _ = BuildPlan(testXML("web"), src, dense, PlanOptions{})
	if p.Sparse || p.BytesToMove != p.TotalBytes || !strings.Contains(p.SparseNote, "dense") {
		t.Fatalf("sparse %v note %q bytes %d of %d", p.Sparse, p.SparseNote, p.BytesToMove, p.TotalBytes)
	}
}

func TestPlanRefusals(t *testing.T) {
	src, dst, _, _, _ := lab(t, 4<<10)
	p, _ := BuildPlan(testXML("web"), src, dst, PlanOptions{})
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "not enough space in destination pool default") {
		t.Fatalf("problems %v", p.Problems)
	}
	src, dst, _, _, _ = lab(t, 1<<30)
	dst.Put("/var/lib/libvirt/images/web-vda.qcow2", []byte("someone else's"), "raw")
	p, _ = BuildPlan(testXML("web"), src, dst, PlanOptions{})
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "already has /var/lib/libvirt/images/web-vda.qcow2") {
		t.Fatalf("problems %v", p.Problems)
	}
	_, err := BuildPlan("<domain", src, dst, PlanOptions{})
	if err == nil {
		t.Fatal("bad XML accepted")
	}
}

type memRecorder struct {
	arts   map[int]Artifact
	stages []string
}

func (r *memRecorder) Artifact(a Artifact) error {
	if r.arts == nil {
		r.arts = map[int]Artifact{}
	}
	r.arts[a.Index] = a
	return nil
}
func (r *memRecorder) Stage(s string) error { r.stages = append(r.stages, s); return nil }

func newMove(t *testing.T, src, dst *virttest.Storage, srcHost, dstHost *fakeHost, dom *fakeDomain, prev map[string]Artifact) (*Move, *memRecorder) {
	t.Helper()
	p, err := BuildPlan(testXML("web"), src, dst, PlanOptions{SourceName: "host1", Previous: prev})
	if err != nil || len(p.Problems) > 0 {
		t.Fatalf("plan: %v %v", err, p.Problems)
	}
	rec := &memRecorder{}
	return &Move{Src: srcHost, Dst: dstHost, SrcStorage: src, DstStorage: dst, Domain: dom, Plan: p, Recorder: rec, Previous: prev,
		Observe: func() (*virt.HostUsage, error) { return usage(src, srcHost, nil), nil }}, rec
}

func TestMoveCopiesVerifiesAndRemovesTheSource(t *testing.T) {
	src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
	before := src.Files()
	mv, rec := newMove(t, src, dst, srcHost, dstHost, dom, nil)
	mv.Start = true
	out, err := mv.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srcFiles, dstFiles := src.Files(), dst.Files()
	for _, a := range out.Artifacts {
		if !bytes.Equal(dstFiles[a.DstPath], before[a.SrcPath]) {
			t.Fatalf("%s differs on the destination", a.DstPath)
		}
		if a.SrcPath == "/srv/vms/web-vdb.img" {
			// Outside the source's pools: not ferry's to delete.
			if a.State != StateKept || !strings.Contains(a.KeepReason, "not in a storage pool") || srcFiles[a.SrcPath] == nil {
				t.Fatalf("%+v", a)
			}
			continue
		}
		if a.State != StateMoved || a.Checksum == "" {
			t.Fatalf("%+v", a)
		}
		if _, ok := srcFiles[a.SrcPath]; ok {
			t.Fatalf("%s left on the source", a.SrcPath)
		}
	}
	if string(dstFiles["/var/log/libvirt/qemu/web.log"]) != "a previous stay\n" {
		t.Fatal("the destination's own log was overwritten")
	}
	if _, ok := srcFiles["/var/log/libvirt/qemu/webserver.log"]; !ok {
		t.Fatal("another VM's log was moved")
	}
	if out.SentBytes >= int64(len(before["/srv/vms/web-vdb.img"])) {
		t.Fatalf("sent %d bytes: holes went over the wire", out.SentBytes)
	}
	d, err := dstHost.LookupDomain(testUUID)
	if err != nil || !out.Started || !out.Committed {
		t.Fatalf("destination domain %v started %v", err, out.Started)
	}
	if x, _ := d.XML(false); !strings.Contains(x, "/var/lib/libvirt/images/web-vdb.img") {
		t.Fatalf("destination XML not rewritten:\n%s", x)
	}
	if _, err := srcHost.LookupDomain(testUUID); err == nil || !reflect.DeepEqual(dom.calls, []string{"undefine(keepNVRAM=true)"}) {
		t.Fatalf("source calls %v", dom.calls)
	}
	if !reflect.DeepEqual(rec.stages, []string{StageCopying, StageDefined, StageCommitted, StageDone}) {
		t.Fatalf("stages %v", rec.stages)
	}
	if src.Transient() != 0 || dst.Transient() != 0 {
		t.Fatal("transient pools left behind")
	}
}

func TestMoveRollsBackBeforeTouchingTheSource(t *testing.T) {
	src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
	before := src.Files()
	dstBefore := len(dst.Files())
	dst.CallFn = failUploadAfterFirstChunk("/var/lib/libvirt/qemu/nvram/web_VARS.fd")
	mv, rec := newMove(t, src, dst, srcHost, dstHost, dom, nil)
	_, err := mv.Run(context.Background())
	rb, ok := IsRollback(err)
	if !ok || !rb.Complete() || !strings.Contains(rb.Step, "nvram") {
		t.Fatalf("err %v", err)
	}
	if dstFiles := dst.Files(); len(dstFiles) != dstBefore {
		t.Fatalf("destination keeps %d files, had %d: %v", len(dstFiles), dstBefore, dstFiles)
	}
	if !reflect.DeepEqual(src.Files(), before) || len(dom.calls) != 0 {
		t.Fatalf("source touched: calls %v", dom.calls)
	}
	if _, err := dstHost.LookupDomain(testUUID); err == nil {
		t.Fatal("destination definition left")
	}
	for _, a := range rec.arts {
		if a.State == StateVerified || a.State == StateCopying {
			t.Fatalf("recorded %s as %s after the rollback", a.Name(), a.State)
		}
	}
}

func TestMoveResumesVerifiedArtifacts(t *testing.T) {
	src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
	// An interrupted run had copied and verified the first disk.
	// (What a crash leaves: copies on the destination, their records.)
	first, _ := newMove(t, src, dst, srcHost, dstHost, dom, nil)
	a0 := first.Plan.Artifacts[0]
	sum, _, err := Checksum(context.Background(), mustVol(t, src, a0.SrcPath), true)
	if err != nil {
		t.Fatal(err)
	}
	dst.Put(a0.DstPath, src.Files()[a0.SrcPath], "")
	vi, _ := mustVol(t, src, a0.SrcPath).Info()
	a0.State, a0.Checksum, a0.SourceStamp = StateVerified, sum, StampOf(vi)
	// and started the second one.
	a1 := first.Plan.Artifacts[1]
	dst.Put(a1.DstPath, []byte("partial"), "")
	a1.State = StateCopying
	prev := map[string]Artifact{a0.Key(): a0, a1.Key(): a1}

	mv, _ := newMove(t, src, dst, srcHost, dstHost, dom, prev)
	out, err := mv.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !out.Artifacts[0].Skipped || out.Artifacts[1].Skipped || out.Artifacts[0].Checksum != sum {
		t.Fatalf("%+v", out.Artifacts[:2])
	}
	if out.Artifacts[1].Checksum == "" || len(dst.Files()[a1.DstPath]) != 4<<20 {
		t.Fatal("the partial copy was not redone")
	}
}

func TestShutdownDomainForcesAfterTimeout(t *testing.T) {
	h := newFakeHost()
	d, _ := h.DefineXML(testXML("web"))
	fd := d.(*fakeDomain)
	fd.info.State = virt.StateRunning
	how, err := ShutdownDomain(context.Background(), fd, ShutdownPolicy{Timeout: 0}, nil)
	if err == nil || how != "" {
		t.Fatalf("without force: %q %v", how, err)
	}
	how, err = ShutdownDomain(context.Background(), fd, ShutdownPolicy{Timeout: 0, Force: true}, nil)
	if err != nil || how != "forced" || fd.info.State.Active() {
		t.Fatalf("%q %v %s", how, err, fd.info.State)
	}
}

func mustVol(t *testing.T, s *virttest.Storage, path string) virt.Volume {
	t.Helper()
	v, err := s.LookupVolumeByPath(path)
	if err != nil {
		return s.Volume(path)
	}
	return v
}
