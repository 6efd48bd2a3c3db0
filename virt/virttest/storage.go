package virttest

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"sync"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
)

// Storage is an in-memory virt.StorageHost: files by path, pools over
// directories. Blocks of 4 KiB of zeros count as holes (unallocated, sent
// as holes by a sparse download), so sparse copies can be told from dense
// ones. Attach it to a Host (AttachStorage) for Cluster.Dial to return a
// host virt.StorageOf accepts, or pass it wherever a virt.StorageHost (or
// coldmove.Storage) is wanted.
type Storage struct {
	// CallFn, when set, is called before every storage call (of the
	// StorageHost, its pools, volumes and uploads) with what the call is
	// about. An error it returns is the call's result, and the call changes
	// nothing; nil lets the call go on. Tests use it to fail one call, or to
	// act at a given moment (change a file while it is being read).
	CallFn func(StorageCall) error

	mu        sync.Mutex
	sparse    bool
	files     map[string][]byte
	formats   map[string]string
	pools     map[string]*storagePool // by name
	transient int
	gen       map[string]int // writes per path: the fake's mtime and ctime
}

var (
	_ virt.StorageHost = (*Storage)(nil)
	_ virt.Host        = (*storageHost)(nil)
	_ virt.StorageHost = (*storageHost)(nil)
)

// StorageOp names a storage call, for CallFn.
type StorageOp string

// The storage calls CallFn sees.
const (
	OpLibvirtVersion     StorageOp = "libvirt-version"
	OpListPools          StorageOp = "list-pools"
	OpLookupPool         StorageOp = "lookup-pool"
	OpPoolForDir         StorageOp = "pool-for-dir"
	OpReleasePool        StorageOp = "release-pool" // the release function of PoolForDir
	OpLookupVolumeByPath StorageOp = "lookup-volume-by-path"
	OpPoolInfo           StorageOp = "pool-info"
	OpRefresh            StorageOp = "refresh"
	OpLookupVolume       StorageOp = "lookup-volume"
	OpListVolumes        StorageOp = "list-volumes"
	OpCreateVolume       StorageOp = "create-volume"
	OpVolumeInfo         StorageOp = "volume-info"
	OpDelete             StorageOp = "delete"
	OpDownload           StorageOp = "download"
	OpUpload             StorageOp = "upload"
	OpWrite              StorageOp = "write" // one chunk of an upload
	OpHole               StorageOp = "hole"  // one hole of an upload
	OpClose              StorageOp = "close" // an upload's end
	OpAbort              StorageOp = "abort"
)

// StorageCall is one call to a fake Storage.
type StorageCall struct {
	Op StorageOp
	// Path is the file (volume calls, LookupVolume, CreateVolume, uploads)
	// or directory (PoolForDir and the other pool calls); "" for ListPools,
	// LibvirtVersion and LookupPool.
	Path string
	Pool string // the pool's name, for pool calls and LookupPool
	// Offset is an upload's position, for Write and Hole.
	Offset int64
}

// FailCall is a CallFn that fails every call op makes on path (on any
// path when path is "") with err.
func FailCall(op StorageOp, path string, err error) func(StorageCall) error {
	return func(c StorageCall) error {
		if c.Op == op && (path == "" || c.Path == path) {
			return err
		}
		return nil
	}
}

// NewStorage returns a host storage without pools or files. sparse says
// whether it can stream sparse volumes.
func NewStorage(sparse bool) *Storage {
	return &Storage{sparse: sparse, files: map[string][]byte{}, formats: map[string]string{}, pools: map[string]*storagePool{}, gen: map[string]int{}}
}

// AddPool adds an active dir pool over dir with availBytes free.
func (s *Storage) AddPool(name, dir string, availBytes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools[name] = &storagePool{s: s, name: name, dir: dir, avail: availBytes}
}

// Put writes a file (a copy of data) in the given format, as a write does:
// its stamp (mtime, ctime) moves.
func (s *Storage) Put(path string, data []byte, format string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = append([]byte(nil), data...)
	s.formats[path] = format
	s.gen[path]++
}

// Touch changes a file the way a write does, leaving its contents.
func (s *Storage) Touch(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen[path]++
}

// Files is a snapshot of every file by path.
func (s *Storage) Files() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte, len(s.files))
	for p, b := range s.files {
		out[p] = b
	}
	return out
}

// Transient counts the pools PoolForDir made and not yet released.
func (s *Storage) Transient() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transient
}

// Volume is a handle to the file at path, whether a pool covers it or not
// (for tests that read a file directly). It bypasses CallFn's lookup but
// not the volume's own calls.
func (s *Storage) Volume(path string) virt.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &storageVolume{s: s, path: path, pool: s.poolOver(filepath.Dir(path))}
}

// Usage is the pools and volumes part of what virt.ObserveUsage would
// report for this storage; backing gives the volumes' backing files by
// path. The caller adds the domains.
func (s *Storage) Usage(backing map[string]string) *virt.HostUsage {
	u := &virt.HostUsage{}
	for _, p := range s.sortedPools() {
		u.Pools = append(u.Pools, p.info())
		for _, v := range p.volumes() {
			v.BackingPath = backing[v.Path]
			u.Volumes = append(u.Volumes, v)
		}
	}
	return u
}

func (s *Storage) call(c StorageCall) error {
	if s.CallFn == nil {
		return nil
	}
	return s.CallFn(c)
}

func notFound(what string) error {
	return &virt.Error{Op: what, Sentinel: virt.ErrNotFound, Message: what + " not found"}
}

// LibvirtVersion is 10.1.0 for a sparse-capable storage, 3.0.0 otherwise.
func (s *Storage) LibvirtVersion() (uint32, error) {
	if err := s.call(StorageCall{Op: OpLibvirtVersion}); err != nil {
		return 0, err
	}
	if s.sparse {
		return 10001000, nil
	}
	return 3000000, nil
}

func (s *Storage) SparseStreams() (bool, string) {
	if s.sparse {
		return true, ""
	}
	return false, "libvirt 3.0.0 predates sparse streams"
}

func (s *Storage) ListPools() ([]virt.PoolInfo, error) {
	if err := s.call(StorageCall{Op: OpListPools}); err != nil {
		return nil, err
	}
	var out []virt.PoolInfo
	for _, p := range s.sortedPools() {
		out = append(out, p.info())
	}
	return out, nil
}

func (s *Storage) LookupPool(name string) (virt.Pool, error) {
	if err := s.call(StorageCall{Op: OpLookupPool, Pool: name}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pools[name]; ok {
		return p, nil
	}
	return nil, notFound("pool " + name)
}

// PoolForDir returns the pool over dir, else a transient one (named
// "ferry-N") when the directory has files or build is set.
func (s *Storage) PoolForDir(dir string, build bool) (virt.Pool, func() error, error) {
	if err := s.call(StorageCall{Op: OpPoolForDir, Path: dir}); err != nil {
		return nil, nil, err
	}
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
	p := &storagePool{s: s, name: name, dir: dir, avail: 1 << 40}
	s.pools[name] = p
	s.transient++
	return p, func() error {
		if err := s.call(StorageCall{Op: OpReleasePool, Path: dir, Pool: name}); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.pools, name)
		s.transient--
		return nil
	}, nil
}

func (s *Storage) LookupVolumeByPath(path string) (virt.Volume, error) {
	if err := s.call(StorageCall{Op: OpLookupVolumeByPath, Path: path}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[path]; !ok {
		return nil, notFound(path)
	}
	// Like libvirt: only a file some pool covers is a volume.
	if pool := s.poolOver(filepath.Dir(path)); pool != "" {
		return &storageVolume{s: s, path: path, pool: pool}, nil
	}
	return nil, notFound(path)
}

// dirExists: some file lies in dir. Call with s.mu held.
func (s *Storage) dirExists(dir string) bool {
	for p := range s.files {
		if filepath.Dir(p) == dir {
			return true
		}
	}
	return false
}

// poolOver names a pool over dir, "" if none. Call with s.mu held.
func (s *Storage) poolOver(dir string) string {
	for _, p := range s.pools {
		if p.dir == dir {
			return p.name
		}
	}
	return ""
}

func (s *Storage) sortedPools() []*storagePool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*storagePool, 0, len(s.pools))
	for _, p := range s.pools {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// storagePool is a pool of a fake Storage: a directory.
type storagePool struct {
	s     *Storage
	name  string
	dir   string
	avail uint64
}

func (p *storagePool) call(op StorageOp, path string) error {
	return p.s.call(StorageCall{Op: op, Path: path, Pool: p.name})
}

func (p *storagePool) info() virt.PoolInfo {
	return virt.PoolInfo{Name: p.name, Type: "dir", Path: p.dir, Active: true, AvailableBytes: p.avail, CapacityBytes: p.avail}
}

func (p *storagePool) Info() (virt.PoolInfo, error) {
	if err := p.call(OpPoolInfo, p.dir); err != nil {
		return virt.PoolInfo{}, err
	}
	return p.info(), nil
}

func (p *storagePool) Refresh() error { return p.call(OpRefresh, p.dir) }

func (p *storagePool) LookupVolume(name string) (virt.Volume, error) {
	path := filepath.Join(p.dir, name)
	if err := p.call(OpLookupVolume, path); err != nil {
		return nil, err
	}
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if _, ok := p.s.files[path]; !ok {
		return nil, notFound(path)
	}
	return &storageVolume{s: p.s, path: path, pool: p.name}, nil
}

func (p *storagePool) ListVolumes() ([]virt.VolumeInfo, error) {
	if err := p.call(OpListVolumes, p.dir); err != nil {
		return nil, err
	}
	return p.volumes(), nil
}

// volumes lists the pool's files, by path.
func (p *storagePool) volumes() []virt.VolumeInfo {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	var paths []string
	for path := range p.s.files {
		if filepath.Dir(path) == p.dir {
			paths = append(paths, path)
		}
	}
	sort.Strings(paths)
	var out []virt.VolumeInfo
	for _, path := range paths {
		info, _ := (&storageVolume{s: p.s, path: path, pool: p.name}).info()
		out = append(out, info)
	}
	return out
}

func (p *storagePool) CreateVolume(def libvirtxml.StorageVolume) (virt.Volume, error) {
	path := filepath.Join(p.dir, def.Name)
	if err := p.call(OpCreateVolume, path); err != nil {
		return nil, err
	}
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if _, ok := p.s.files[path]; ok {
		return nil, &virt.Error{Op: "create " + path, Sentinel: virt.ErrExists}
	}
	var size uint64
	if def.Capacity != nil {
		size = def.Capacity.Value
	}
	p.s.files[path] = make([]byte, size)
	p.s.formats[path] = "raw"
	return &storageVolume{s: p.s, path: path, pool: p.name}, nil
}

// holeBlock is the fake's allocation unit: a block of zeros is a hole.
const holeBlock = 4096

var zeros = make([]byte, holeBlock)

// isHole reports whether a chunk of at most holeBlock bytes is all zeros.
func isHole(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }

func allocatedOf(b []byte) uint64 {
	var n uint64
	for off := 0; off < len(b); off += holeBlock {
		if !isHole(b[off:min(off+holeBlock, len(b))]) {
			n += holeBlock
		}
	}
	return n
}
