package coldmove

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
)

// fakeStore is an in-memory host storage: files by path, pools over
// directories. Zero 4 KiB blocks count as holes.
type fakeStore struct {
	mu        sync.Mutex
	sparse    bool
	files     map[string][]byte
	formats   map[string]string
	pools     map[string]*fakePool // by name
	transient int
	// failUpload, when set, fails an upload of that path after half the data.
	failUpload string
	// gen counts writes per path: the fake's mtime and ctime.
	gen map[string]int
	// onDownload, when set, runs before each download of a path.
	onDownload func(path string)
}

func newFakeStore(sparse bool) *fakeStore {
	return &fakeStore{sparse: sparse, files: map[string][]byte{}, formats: map[string]string{}, pools: map[string]*fakePool{}, gen: map[string]int{}}
}

func (s *fakeStore) addPool(name, dir string, avail uint64) {
	s.pools[name] = &fakePool{s: s, name: name, dir: dir, avail: avail}
}

func (s *fakeStore) put(path string, data []byte, format string) {
	s.files[path] = data
	s.formats[path] = format
	s.gen[path]++
}

// touch changes a file the way a write does, leaving its length.
func (s *fakeStore) touch(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen[path]++
}

// usage is what virt.ObserveUsage would report for the store and host.
func (s *fakeStore) usage(h *fakeHost, backing map[string]string) *virt.HostUsage {
	u := &virt.HostUsage{}
	for _, p := range s.pools {
		info, _ := p.Info()
		u.Pools = append(u.Pools, info)
		vols, _ := p.ListVolumes()
		for _, v := range vols {
			v.BackingPath = backing[v.Path]
			u.Volumes = append(u.Volumes, v)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.domains {
		u.Domains = append(u.Domains, virt.DomainFiles{Name: d.info.Name, UUID: d.info.UUID, State: d.info.State,
			Persistent: d.info.Persistent, Files: virt.DomainFileRefs(d.xml, nil)})
	}
	return u
}

func (s *fakeStore) SparseStreams() (bool, string) {
	if s.sparse {
		return true, ""
	}
	return false, "libvirt 3.0.0 predates sparse streams"
}

func notFound(what string) error {
	return &virt.Error{Op: what, Sentinel: virt.ErrNotFound, Message: what + " not found"}
}

func (s *fakeStore) LookupPool(name string) (virt.Pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pools[name]; ok {
		return p, nil
	}
	return nil, notFound("pool " + name)
}

func (s *fakeStore) PoolForDir(dir string, build bool) (virt.Pool, func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pools {
		if p.dir == dir {
			return p, func() error { return nil }, nil
		}
	}
	if !build && !s.dirExists(dir) {
		return nil, nil, notFound("directory " + dir)
	}
	name := fmt.Sprintf("ferry-%d", len(s.pools))
	p := &fakePool{s: s, name: name, dir: dir, avail: 1 << 40}
	s.pools[name] = p
	s.transient++
	return p, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.pools, name)
		s.transient--
		return nil
	}, nil
}

func (s *fakeStore) dirExists(dir string) bool {
	for p := range s.files {
		if filepath.Dir(p) == dir {
			return true
		}
	}
	return false
}

func (s *fakeStore) LookupVolumeByPath(path string) (virt.Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[path]; !ok {
		return nil, notFound(path)
	}
	for _, p := range s.pools {
		if p.dir == filepath.Dir(path) {
			return &fakeVol{s: s, path: path, pool: p.name}, nil
		}
	}
	return nil, notFound(path)
}

type fakePool struct {
	s     *fakeStore
	name  string
	dir   string
	avail uint64
}

func (p *fakePool) Info() (virt.PoolInfo, error) {
	return virt.PoolInfo{Name: p.name, Type: "dir", Path: p.dir, Active: true, AvailableBytes: p.avail, CapacityBytes: p.avail}, nil
}
func (p *fakePool) Refresh() error { return nil }

func (p *fakePool) LookupVolume(name string) (virt.Volume, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	path := filepath.Join(p.dir, name)
	if _, ok := p.s.files[path]; !ok {
		return nil, notFound(path)
	}
	return &fakeVol{s: p.s, path: path, pool: p.name}, nil
}

func (p *fakePool) ListVolumes() ([]virt.VolumeInfo, error) {
	p.s.mu.Lock()
	var paths []string
	for path := range p.s.files {
		if filepath.Dir(path) == p.dir {
			paths = append(paths, path)
		}
	}
	p.s.mu.Unlock()
	sort.Strings(paths)
	var out []virt.VolumeInfo
	for _, path := range paths {
		info, _ := (&fakeVol{s: p.s, path: path, pool: p.name}).Info()
		out = append(out, info)
	}
	return out, nil
}

func (p *fakePool) CreateVolume(def libvirtxml.StorageVolume) (virt.Volume, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	path := filepath.Join(p.dir, def.Name)
	if _, ok := p.s.files[path]; ok {
		return nil, &virt.Error{Op: "create " + path, Sentinel: virt.ErrExists}
	}
	p.s.files[path] = make([]byte, def.Capacity.Value)
	p.s.formats[path] = "raw"
	return &fakeVol{s: p.s, path: path, pool: p.name}, nil
}

type fakeVol struct {
	s    *fakeStore
	path string
	pool string
}

const fakeBlock = 4096

func allocatedOf(b []byte) uint64 {
	var n uint64
	for off := 0; off < len(b); off += fakeBlock {
		end := min(off+fakeBlock, len(b))
		if !bytes.Equal(b[off:end], zeroBlock[:end-off]) {
			n += fakeBlock
		}
	}
	return n
}

func (v *fakeVol) Info() (virt.VolumeInfo, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	b, ok := v.s.files[v.path]
	if !ok {
		return virt.VolumeInfo{}, notFound(v.path)
	}
	t := fmt.Sprintf("%d.0", v.s.gen[v.path])
	return virt.VolumeInfo{Name: filepath.Base(v.path), Path: v.path, Pool: v.pool, Format: v.s.formats[v.path],
		CapacityBytes: uint64(len(b)), AllocatedBytes: allocatedOf(b), PhysicalBytes: uint64(len(b)), Mtime: t, Ctime: t}, nil
}

func (v *fakeVol) Delete() error {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if _, ok := v.s.files[v.path]; !ok {
		return notFound(v.path)
	}
	delete(v.s.files, v.path)
	return nil
}

func (v *fakeVol) Download(ctx context.Context, w virt.SparseWriter, sparse bool) (virt.StreamStats, error) {
	if v.s.onDownload != nil {
		v.s.onDownload(v.path)
	}
	v.s.mu.Lock()
	b := append([]byte(nil), v.s.files[v.path]...)
	v.s.mu.Unlock()
	st := virt.StreamStats{Sparse: sparse}
	for off := 0; off < len(b); off += fakeBlock {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		end := min(off+fakeBlock, len(b))
		chunk := b[off:end]
		if sparse && bytes.Equal(chunk, zeroBlock[:len(chunk)]) {
			if err := w.Hole(int64(len(chunk))); err != nil {
				return st, err
			}
			st.HoleBytes += int64(len(chunk))
			continue
		}
		if _, err := w.Write(chunk); err != nil {
			return st, err
		}
		st.DataBytes += int64(len(chunk))
	}
	return st, nil
}

func (v *fakeVol) Upload(ctx context.Context, sparse bool) (virt.VolumeWriter, error) {
	return &fakeUpload{v: v, ctx: ctx}, nil
}

type fakeUpload struct {
	v   *fakeVol
	ctx context.Context
	buf []byte
}

func (u *fakeUpload) Write(p []byte) (int, error) {
	if err := u.ctx.Err(); err != nil {
		return 0, err
	}
	if u.v.s.failUpload == u.v.path && len(u.buf) > 0 {
		return 0, &virt.Error{Op: "upload " + u.v.path, Sentinel: virt.ErrUnreachable, Message: "connection reset"}
	}
	u.buf = append(u.buf, p...)
	return len(p), nil
}

func (u *fakeUpload) Hole(n int64) error {
	u.buf = append(u.buf, make([]byte, n)...)
	return nil
}

func (u *fakeUpload) Close() error {
	u.v.s.mu.Lock()
	defer u.v.s.mu.Unlock()
	old := u.v.s.files[u.v.path]
	if len(old) > len(u.buf) {
		u.buf = append(u.buf, old[len(u.buf):]...)
	}
	u.v.s.files[u.v.path] = u.buf
	u.v.s.gen[u.v.path]++
	return nil
}

func (u *fakeUpload) Abort() error { return nil }

// fakeHost is the domain side of a host: only what a move calls.
type fakeHost struct {
	virt.Host
	mu      sync.Mutex
	domains map[string]*fakeDomain // by UUID
	subs    []chan virt.Event
}

func (h *fakeHost) Subscribe(ctx context.Context) (<-chan virt.Event, error) {
	ch := make(chan virt.Event, 16)
	h.mu.Lock()
	h.subs = append(h.subs, ch)
	h.mu.Unlock()
	go func() {
		<-ctx.Done()
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, c := range h.subs {
			if c == ch {
				h.subs = append(h.subs[:i], h.subs[i+1:]...)
				close(ch)
				break
			}
		}
	}()
	return ch, nil
}

// emit delivers a lifecycle event of a domain to every subscriber.
func (h *fakeHost) emit(uuid, lifecycle string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.subs {
		c <- virt.Event{Kind: virt.EventLifecycle, UUID: uuid, Lifecycle: lifecycle}
	}
}

func newFakeHost() *fakeHost { return &fakeHost{domains: map[string]*fakeDomain{}} }

func (h *fakeHost) LookupDomain(key string) (virt.Domain, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.domains {
		if d.info.UUID == key || d.info.Name == key {
			return d, nil
		}
	}
	return nil, notFound("domain " + key)
}

func (h *fakeHost) DefineXML(x string) (virt.Domain, error) {
	spec, err := virt.ParseSpec(x)
	if err != nil {
		return nil, err
	}
	d := &fakeDomain{h: h, xml: x, info: virt.DomainInfo{Name: spec.Name, UUID: spec.UUID, State: virt.StateShutoff, Persistent: true}}
	h.mu.Lock()
	h.domains[spec.UUID] = d
	h.mu.Unlock()
	return d, nil
}

type fakeDomain struct {
	virt.Domain
	h     *fakeHost
	xml   string
	info  virt.DomainInfo
	calls []string
	// startedBeforeUndefine: someone starts the VM between ferry's last
	// check and its undefine, so the undefine leaves a transient domain.
	startedBeforeUndefine bool
}

func (d *fakeDomain) Info() (virt.DomainInfo, error) { return d.info, nil }
func (d *fakeDomain) XML(bool) (string, error)       { return d.xml, nil }
func (d *fakeDomain) Start() error {
	d.calls = append(d.calls, "start")
	d.info.State = virt.StateRunning
	return nil
}
func (d *fakeDomain) Destroy() error {
	d.calls = append(d.calls, "destroy")
	d.info.State = virt.StateShutoff
	return nil
}
func (d *fakeDomain) Shutdown() error { d.calls = append(d.calls, "shutdown"); return nil }
func (d *fakeDomain) Undefine(keepNVRAM bool) error {
	d.calls = append(d.calls, fmt.Sprintf("undefine(keepNVRAM=%v)", keepNVRAM))
	if d.startedBeforeUndefine {
		d.info.State, d.info.Persistent = virt.StateRunning, false
		return nil
	}
	d.h.mu.Lock()
	delete(d.h.domains, d.info.UUID)
	d.h.mu.Unlock()
	return nil
}

const testUUID = "6f1c3e2a-1111-4222-8333-444455556666"

func testXML(name string) string {
	return strings.NewReplacer("NAME", name, "UUID", testUUID).Replace(`<domain type='qemu'>
  <name>NAME</name>
  <uuid>UUID</uuid>
  <memory unit='MiB'>128</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/NAME_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/NAME-vda.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/vms/NAME-vdb.img'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices>
</domain>`)
}

// pattern returns n bytes with data at the given offsets (1 KiB each) and zeros elsewhere.
func pattern(n int, seed byte, offsets ...int) []byte {
	b := make([]byte, n)
	for _, off := range offsets {
		for i := 0; i < 1024 && off+i < n; i++ {
			b[off+i] = seed + byte(i%7) + 1
		}
	}
	return b
}
