package coldmove

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
)

// DefaultLogDir is where libvirt's QEMU driver keeps each VM's log file.
const DefaultLogDir = "/var/log/libvirt/qemu"

// DefaultPool is the destination pool when neither --to-pool nor a pool of
// the disk's source pool's name exists there.
const DefaultPool = "default"

// Storage is what a move needs of a host's storage; virt.StorageHost has it.
type Storage interface {
	SparseStreams() (bool, string)
	LookupPool(name string) (virt.Pool, error)
	PoolForDir(dir string, build bool) (virt.Pool, func() error, error)
	LookupVolumeByPath(path string) (virt.Volume, error)
}

// Kind is what an artifact is.
type Kind string

// Artifact kinds, in the order they are copied.
const (
	KindBacking Kind = "backing"
	KindDisk    Kind = "disk"
	KindNVRAM   Kind = "nvram"
	KindLog     Kind = "log"
)

// Artifact states, as recorded.
const (
	StatePlanned  = "planned"
	StateCopying  = "copying"  // a destination volume may exist, incomplete
	StateVerified = "verified" // copied, checksum equal on both ends
	StateReused   = "reused"   // already on the destination, identical: not ours to delete
	StateRemoved  = "removed"  // the destination copy was removed again (rollback)
	StateMoved    = "moved"    // committed and the source copy removed
	StateKept     = "kept"     // committed, source copy left in place
)

// Artifact is one file of the VM to move.
type Artifact struct {
	Index          int    `json:"index"`
	Kind           Kind   `json:"kind"`
	Target         string `json:"target,omitempty"` // vda... for disks
	SrcPath        string `json:"source_path"`
	Format         string `json:"format,omitempty"`
	CapacityBytes  uint64 `json:"capacity_bytes"`  // virtual size
	AllocatedBytes uint64 `json:"allocated_bytes"` // on the source's disk
	PhysicalBytes  uint64 `json:"physical_bytes"`  // file length: what the stream covers
	DstPool        string `json:"destination_pool,omitempty"`
	DstPath        string `json:"destination_path"`
	// KeepOnSource: copied, never removed from the source (read-only or
	// shareable images from the plan; at the commit point, every file
	// DecideRemovals keeps).
	KeepOnSource bool   `json:"keep_on_source,omitempty"`
	Note         string `json:"note,omitempty"`
	// KeepReason says why the source file was kept at the commit point, and
	// KeptBy who else uses it (DecideRemovals).
	KeepReason string   `json:"keep_reason,omitempty"`
	KeptBy     []string `json:"kept_by,omitempty"`
	// SourceStamp is the source file's size and times when the copy began
	// (StampOf); the commit point re-reads it to see the file unchanged.
	SourceStamp string `json:"source_stamp,omitempty"`

	// Filled in as the move goes.
	State      string `json:"state"`
	Checksum   string `json:"checksum,omitempty"`
	SentBytes  int64  `json:"sent_bytes"` // data bytes on the wire (holes excluded)
	Sparse     bool   `json:"sparse"`
	Skipped    bool   `json:"skipped,omitempty"` // resumed: copied and verified by an earlier run
	DurationMS int64  `json:"duration_ms,omitempty"`
}

// Key identifies an artifact across runs of the same move.
func (a Artifact) Key() string { return string(a.Kind) + ":" + a.SrcPath }

// Name is how output refers to the artifact.
func (a Artifact) Name() string {
	if a.Target != "" {
		return fmt.Sprintf("%s %s", a.Kind, a.Target)
	}
	return fmt.Sprintf("%s %s", a.Kind, filepath.Base(a.SrcPath))
}

// WireBytes is what the stream will carry for the artifact.
func (a Artifact) WireBytes(sparse bool) uint64 {
	if sparse {
		return min(a.AllocatedBytes, a.PhysicalBytes)
	}
	return a.PhysicalBytes
}

// PoolSpace is the space check of one destination pool.
type PoolSpace struct {
	Pool           string `json:"pool"`
	Path           string `json:"path"`
	AvailableBytes uint64 `json:"available_bytes"`
	NeedBytes      uint64 `json:"need_bytes"`
	Enough         bool   `json:"enough"`
	// New: the directory has no pool on the destination (maybe no directory
	// yet): a transient pool is made over it when copying; space unknown.
	New bool `json:"new,omitempty"`
}

// Plan is everything a move will copy, and where to.
type Plan struct {
	VM          string      `json:"vm"`
	UUID        string      `json:"uuid"`
	Artifacts   []Artifact  `json:"artifacts"`
	Sparse      bool        `json:"sparse"`
	SparseNote  string      `json:"sparse_note,omitempty"`
	TotalBytes  uint64      `json:"total_bytes"`   // file lengths
	BytesToMove uint64      `json:"bytes_to_move"` // on the wire
	Pools       []PoolSpace `json:"pools"`
	// Problems make the move impossible as planned (refuse); nothing was changed.
	Problems []string `json:"problems,omitempty"`
	XML      string   `json:"-"` // the definition the plan was made from
}

// PlanOptions steer the plan.
type PlanOptions struct {
	ToPool     string // destination pool for disks ("" : per disk, see DefaultPool)
	LogDir     string // "" : DefaultLogDir
	SourceName string // the source host's name, for renamed log files
	// Previous are the artifacts an interrupted run of the same move recorded,
	// by Key: their destination paths are kept and their copies are not a clash.
	Previous map[string]Artifact
}

// pools caches the pools a move opens on one host and releases the
// transient ones at the end.
type pools struct {
	s        Storage
	byDir    map[string]virt.Pool
	releases []func() error
}

func newPools(s Storage) *pools { return &pools{s: s, byDir: map[string]virt.Pool{}} }

func (p *pools) dir(dir string, build bool) (virt.Pool, error) {
	dir = filepath.Clean(dir)
	if pl, ok := p.byDir[dir]; ok {
		return pl, nil
	}
	pl, release, err := p.s.PoolForDir(dir, build)
	if err != nil {
		return nil, err
	}
	p.byDir[dir] = pl
	p.releases = append(p.releases, release)
	return pl, nil
}

func (p *pools) close() error {
	var errs []error
	for i := len(p.releases) - 1; i >= 0; i-- {
		if err := p.releases[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.releases, p.byDir = nil, map[string]virt.Pool{}
	return errors.Join(errs...)
}

// volumeAt finds the volume holding a file: in the pool libvirt already
// knows it in, else through a pool over its directory.
func (p *pools) volumeAt(path string, build bool) (virt.Volume, error) {
	if v, err := p.s.LookupVolumeByPath(path); err == nil {
		return v, nil
	} else if !errors.Is(err, virt.ErrNotFound) {
		return nil, err
	}
	pl, err := p.dir(filepath.Dir(path), build)
	if err != nil {
		return nil, err
	}
	v, err := pl.LookupVolume(filepath.Base(path))
	if errors.Is(err, virt.ErrNotFound) {
		// A file created since the pool's last scan.
		if rerr := pl.Refresh(); rerr == nil {
			v, err = pl.LookupVolume(filepath.Base(path))
		}
	}
	return v, err
}

// BuildPlan lists a VM's artifacts from its definition and both hosts'
// storage, maps each to its destination path, and checks names and space.
// It changes nothing on either host, except that transient pools may be
// opened over directories and closed again.
func BuildPlan(domainXML string, src, dst Storage, opt PlanOptions) (*Plan, error) {
	var dx libvirtxml.Domain
	if err := dx.Unmarshal(domainXML); err != nil {
		return nil, fmt.Errorf("parse domain XML: %w", err)
	}
	if opt.LogDir == "" {
		opt.LogDir = DefaultLogDir
	}
	plan := &Plan{VM: dx.Name, UUID: dx.UUID, XML: domainXML}
	srcOK, srcWhy := src.SparseStreams()
	dstOK, dstWhy := dst.SparseStreams()
	plan.Sparse = srcOK && dstOK
	switch {
	case !srcOK:
		plan.SparseNote = "dense copy: source " + srcWhy
	case !dstOK:
		plan.SparseNote = "dense copy: destination " + dstWhy
	}
	sp, dp := newPools(src), newPools(dst)
	defer sp.close()
	defer dp.close()

	var arts []Artifact
	seenSrc := map[string]bool{}
	add := func(a Artifact) {
		if seenSrc[a.SrcPath] {
			return
		}
		seenSrc[a.SrcPath] = true
		arts = append(arts, a)
	}
	var backing []Artifact
	if dx.Devices != nil {
		for _, d := range dx.Devices.Disks {
			target := ""
			if d.Target != nil {
				target = d.Target.Dev
			}
			if d.Source == nil || (d.Source.File == nil && d.Source.Volume == nil && d.Source.Block == nil && d.Source.Network == nil) {
				continue // empty cdrom drive
			}
			var path string
			switch {
			case d.Source.File != nil:
				path = d.Source.File.File
			case d.Source.Volume != nil:
				pl, err := src.LookupPool(d.Source.Volume.Pool)
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: pool %s: %v", target, d.Source.Volume.Pool, err))
					continue
				}
				v, err := pl.LookupVolume(d.Source.Volume.Volume)
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: %v", target, err))
					continue
				}
				vi, err := v.Info()
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: %v", target, err))
					continue
				}
				path = vi.Path
			case d.Source.Block != nil:
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s is the block device %s: a cold move copies files only", target, d.Source.Block.Dev))
				continue
			default:
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s is a network disk: it is not local to the source, nothing to copy; detach it or use live migration", target))
				continue
			}
			if path == "" {
				continue
			}
			v, err := sp.volumeAt(path, false)
			if err != nil {
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: %s: %v", target, path, err))
				continue
			}
			vi, err := v.Info()
			if err != nil {
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: %v", target, err))
				continue
			}
			a := Artifact{Kind: KindDisk, Target: target, SrcPath: path, Format: vi.Format,
				CapacityBytes: vi.CapacityBytes, AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes}
			if d.Driver != nil && d.Driver.Type != "" {
				a.Format = d.Driver.Type
			}
			shared := d.Device == "cdrom" || d.ReadOnly != nil || d.Shareable != nil
			if shared {
				a.KeepOnSource = true
				a.Note = "read-only or shared image: copied, left on the source"
			}
			dstPool := opt.ToPool
			if dstPool == "" {
				dstPool = DefaultPool
				if vi.Pool != "" && !strings.HasPrefix(vi.Pool, "ferry-") {
					if _, err := dst.LookupPool(vi.Pool); err == nil {
						dstPool = vi.Pool
					}
				}
			}
			a.DstPool = dstPool
			pl, err := dst.LookupPool(dstPool)
			if err != nil {
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: destination pool %q: %v", target, dstPool, err))
				continue
			}
			pi, err := pl.Info()
			if err != nil {
				plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: destination pool %q: %v", target, dstPool, err))
				continue
			}
			if !pi.Active || pi.Path == "" || (pi.Type != "dir" && pi.Type != "fs" && pi.Type != "netfs") {
				plan.Problems = append(plan.Problems, fmt.Sprintf("destination pool %q (type %s) is not an active file-based pool", dstPool, pi.Type))
				continue
			}
			a.DstPath = filepath.Join(pi.Path, filepath.Base(path))
			add(a)
			// Backing chain: each file lands at its own path on the
			// destination, since the image headers name it.
			for bp, bf := vi.BackingPath, vi.BackingFormat; bp != ""; {
				if !filepath.IsAbs(bp) {
					bp = filepath.Join(filepath.Dir(path), bp)
				}
				bv, err := sp.volumeAt(bp, false)
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: backing file %s: %v", target, bp, err))
					break
				}
				bi, err := bv.Info()
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("disk %s: backing file %s: %v", target, bp, err))
					break
				}
				if bi.Format == "" {
					bi.Format = bf
				}
				backing = append(backing, Artifact{Kind: KindBacking, Target: target, SrcPath: bp, Format: bi.Format,
					CapacityBytes: bi.CapacityBytes, AllocatedBytes: bi.AllocatedBytes, PhysicalBytes: bi.PhysicalBytes,
					DstPath: bp, Note: "backing file: same path on the destination (the image header names it); left on the source if anything else there uses it"})
				bp, bf = bi.BackingPath, bi.BackingFormat
			}
		}
	}
	// Backing files first (deepest first), so a chain is whole on the
	// destination before anything that points into it.
	for i := len(backing) - 1; i >= 0; i-- {
		b := backing[i]
		if !seenSrc[b.SrcPath] {
			seenSrc[b.SrcPath] = true
			arts = append([]Artifact{b}, arts...)
		}
	}
	if dx.OS != nil && dx.OS.NVRam != nil {
		path := dx.OS.NVRam.NVRam
		if dx.OS.NVRam.Source != nil && dx.OS.NVRam.Source.File != nil {
			path = dx.OS.NVRam.Source.File.File
		}
		if path != "" {
			v, err := sp.volumeAt(path, false)
			switch {
			case errors.Is(err, virt.ErrNotFound):
				// Never started: libvirt creates it from the template on the destination.
			case err != nil:
				plan.Problems = append(plan.Problems, fmt.Sprintf("NVRAM %s: %v", path, err))
			default:
				vi, err := v.Info()
				if err != nil {
					plan.Problems = append(plan.Problems, fmt.Sprintf("NVRAM %s: %v", path, err))
					break
				}
				add(Artifact{Kind: KindNVRAM, SrcPath: path, Format: "raw", CapacityBytes: vi.CapacityBytes,
					AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes, DstPath: path})
			}
		}
	}
	if logs, err := listLogs(sp, opt.LogDir, dx.Name); err == nil {
		var dstNames map[string]bool
		if pl, err := dp.dir(opt.LogDir, false); err == nil {
			if vols, err := pl.ListVolumes(); err == nil {
				dstNames = map[string]bool{}
				for _, v := range vols {
					dstNames[v.Name] = true
				}
			}
		}
		for _, vi := range logs {
			name := LogDestName(vi.Name, opt.SourceName, dstNames)
			add(Artifact{Kind: KindLog, SrcPath: vi.Path, Format: "raw", CapacityBytes: vi.CapacityBytes,
				AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes, DstPath: filepath.Join(opt.LogDir, name)})
		}
	}

	for i := range arts {
		a := &arts[i]
		a.Index, a.State = i, StatePlanned
		if prev, ok := opt.Previous[a.Key()]; ok && prev.DstPath != "" {
			a.DstPath = prev.DstPath
		}
	}
	plan.Artifacts = arts
	plan.Problems = append(plan.Problems, checkClashes(arts)...)
	plan.Problems = append(plan.Problems, checkDestination(plan, dst, dp, opt.Previous)...)
	for _, a := range arts {
		plan.TotalBytes += a.PhysicalBytes
		plan.BytesToMove += a.WireBytes(plan.Sparse)
	}
	return plan, nil
}

var logNameRE = regexp.MustCompile(`^(.+)\.log(\.[0-9]+)?$`)

func listLogs(sp *pools, dir, vm string) ([]virt.VolumeInfo, error) {
	pl, err := sp.dir(dir, false)
	if err != nil {
		return nil, err
	}
	_ = pl.Refresh()
	vols, err := pl.ListVolumes()
	if err != nil {
		return nil, err
	}
	var out []virt.VolumeInfo
	for _, v := range vols {
		if m := logNameRE.FindStringSubmatch(v.Name); m != nil && m[1] == vm {
			if v.Path == "" {
				v.Path = filepath.Join(dir, v.Name)
			}
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// LogDestName keeps a log file's name on the destination unless a file of
// that name is already there (an earlier stay of a VM of the same name), in
// which case the copy is named after the source host.
func LogDestName(name, sourceHost string, taken map[string]bool) string {
	if !taken[name] {
		return name
	}
	if sourceHost == "" {
		sourceHost = "source"
	}
	cand := name + ".from-" + sourceHost
	for i := 2; taken[cand]; i++ {
		cand = fmt.Sprintf("%s.from-%s.%d", name, sourceHost, i)
	}
	return cand
}

// checkClashes refuses two artifacts landing on one destination path.
func checkClashes(arts []Artifact) []string {
	var out []string
	seen := map[string]string{}
	for _, a := range arts {
		if other, ok := seen[a.DstPath]; ok {
			out = append(out, fmt.Sprintf("%s and %s would both be %s on the destination", other, a.Name(), a.DstPath))
		}
		seen[a.DstPath] = a.Name()
	}
	return out
}

// checkDestination refuses destination paths already taken (except by the
// copies of an interrupted run of this move, and backing files, which are
// reused when identical) and pools without the space.
func checkDestination(plan *Plan, dst Storage, dp *pools, prev map[string]Artifact) []string {
	var out []string
	type need struct {
		pool  string
		path  string
		avail uint64
		known bool
		bytes uint64
	}
	needs := map[string]*need{}
	var order []string
	for i := range plan.Artifacts {
		a := &plan.Artifacts[i]
		dir := filepath.Dir(a.DstPath)
		n, ok := needs[dir]
		if !ok {
			n = &need{path: dir, pool: a.DstPool}
			if pl, err := dp.dir(dir, false); err == nil {
				if pi, err := pl.Info(); err == nil {
					n.avail, n.known = pi.AvailableBytes, true
					if n.pool == "" {
						n.pool = pi.Name
					}
				}
			}
			needs[dir] = n
			order = append(order, dir)
		}
		if n.known {
			if pl, err := dp.dir(dir, false); err == nil {
				if _, err := pl.LookupVolume(filepath.Base(a.DstPath)); err == nil {
					p, ours := prev[a.Key()]
					switch {
					case ours && p.DstPath == a.DstPath:
						a.Note = strings.TrimPrefix(a.Note+"; copy of an interrupted run on the destination", "; ")
					case a.Kind == KindBacking:
						a.Note = "already on the destination: reused if identical, else the move fails"
						continue
					default:
						out = append(out, fmt.Sprintf("%s: the destination already has %s; remove it or choose another pool (--to-pool)", a.Name(), a.DstPath))
					}
				}
			}
		}
		n.bytes += onDiskBytes(*a, plan.Sparse)
	}
	for _, dir := range order {
		n := needs[dir]
		ps := PoolSpace{Pool: n.pool, Path: n.path, AvailableBytes: n.avail, NeedBytes: n.bytes, Enough: true, New: !n.known}
		if strings.HasPrefix(ps.Pool, "ferry-") {
			ps.Pool = "transient"
		}
		if n.known && n.bytes > n.avail {
			ps.Enough = false
			out = append(out, fmt.Sprintf("not enough space in destination pool %s (%s): the move needs %s, %s is free",
				n.pool, n.path, HumanBytes(n.bytes), HumanBytes(n.avail)))
		}
		plan.Pools = append(plan.Pools, ps)
	}
	return out
}

// onDiskBytes is what the copy will take on the destination's disk.
func onDiskBytes(a Artifact, sparse bool) uint64 {
	if sparse {
		return a.AllocatedBytes
	}
	return max(a.PhysicalBytes, a.AllocatedBytes)
}

// HumanBytes prints a byte count in IEC units.
func HumanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
