package coldmove

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/virt"
)

// planner collects a plan's artifacts from the definition and the source's
// storage, and its problems, in the definition's order.
type planner struct {
	plan     *Plan
	src, dst Storage
	sp, dp   *pools
	opt      PlanOptions
	arts     []Artifact
	backing  []Artifact      // backing files, each chain top down
	seen     map[string]bool // source paths already planned
}

func newPlanner(plan *Plan, src, dst Storage, opt PlanOptions) *planner {
	return &planner{plan: plan, src: src, dst: dst, sp: newPools(src), dp: newPools(dst), opt: opt, seen: map[string]bool{}}
}

// close releases the transient pools opened while planning.
func (p *planner) close() {
	_ = p.dp.close()
	_ = p.sp.close()
}

func (p *planner) problem(format string, args ...any) {
	p.plan.Problems = append(p.plan.Problems, fmt.Sprintf(format, args...))
}

// add plans an artifact, once per source file.
func (p *planner) add(a Artifact) {
	if p.seen[a.SrcPath] {
		return
	}
	p.seen[a.SrcPath] = true
	p.arts = append(p.arts, a)
}

// addDisk plans a disk and its backing chain; a disk that cannot be moved
// is a problem of the plan.
func (p *planner) addDisk(d libvirtxml.DomainDisk) {
	target := ""
	if d.Target != nil {
		target = d.Target.Dev
	}
	if emptyDrive(d.Source) {
		return
	}
	path, ok := p.diskPath(target, d.Source)
	if !ok || path == "" {
		return
	}
	v, err := p.sp.volumeAt(path, false)
	if err != nil {
		p.problem("disk %s: %s: %v", target, path, err)
		return
	}
	vi, err := v.Info()
	if err != nil {
		p.problem("disk %s: %v", target, err)
		return
	}
	a := diskArtifact(d, target, path, vi)
	a.DstPool = p.destPoolName(vi.Pool)
	dir, ok := p.poolDir(target, a.DstPool)
	if !ok {
		return
	}
	a.DstPath = filepath.Join(dir, filepath.Base(path))
	p.add(a)
	p.addBackingChain(target, path, vi)
}

// emptyDrive: a drive without a medium (an empty cdrom), nothing to copy.
func emptyDrive(s *libvirtxml.DomainDiskSource) bool {
	return s == nil || (s.File == nil && s.Volume == nil && s.Block == nil && s.Network == nil)
}

// diskPath is the file behind a disk's source; block and network disks
// are problems, since a cold move copies files only.
func (p *planner) diskPath(target string, s *libvirtxml.DomainDiskSource) (string, bool) {
	switch {
	case s.File != nil:
		return s.File.File, true
	case s.Volume != nil:
		return p.poolVolumePath(target, s.Volume)
	case s.Block != nil:
		p.problem("disk %s is the block device %s: a cold move copies files only", target, s.Block.Dev)
	default:
		p.problem("disk %s is a network disk: it is not local to the source, nothing to copy; detach it or use live migration", target)
	}
	return "", false
}

// poolVolumePath resolves a <source pool= volume=> disk on the source.
func (p *planner) poolVolumePath(target string, sv *libvirtxml.DomainDiskSourceVolume) (string, bool) {
	pl, err := p.src.LookupPool(sv.Pool)
	if err != nil {
		p.problem("disk %s: pool %s: %v", target, sv.Pool, err)
		return "", false
	}
	v, err := pl.LookupVolume(sv.Volume)
	if err != nil {
		p.problem("disk %s: %v", target, err)
		return "", false
	}
	vi, err := v.Info()
	if err != nil {
		p.problem("disk %s: %v", target, err)
		return "", false
	}
	return vi.Path, true
}

// diskArtifact describes a disk's file; read-only and shared images are
// copied but stay on the source (another VM may use them).
func diskArtifact(d libvirtxml.DomainDisk, target, path string, vi virt.VolumeInfo) Artifact {
	a := Artifact{Kind: KindDisk, Target: target, SrcPath: path, Format: vi.Format,
		CapacityBytes: vi.CapacityBytes, AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes}
	if d.Driver != nil && d.Driver.Type != "" {
		a.Format = d.Driver.Type
	}
	if d.Device == "cdrom" || d.ReadOnly != nil || d.Shareable != nil {
		a.KeepOnSource = true
		a.Note = "read-only or shared image: copied, left on the source"
	}
	return a
}

// destPoolName picks a disk's destination pool: --to-pool, else the pool
// of the source pool's name if the destination has one (never one of
// ferry's transient pools), else DefaultPool.
func (p *planner) destPoolName(srcPool string) string {
	if p.opt.ToPool != "" {
		return p.opt.ToPool
	}
	if srcPool != "" && !strings.HasPrefix(srcPool, "ferry-") {
		if _, err := p.dst.LookupPool(srcPool); err == nil {
			return srcPool
		}
	}
	return DefaultPool
}

// poolDir is the directory of a destination pool, which must be an active
// file-based pool.
func (p *planner) poolDir(target, name string) (string, bool) {
	pl, err := p.dst.LookupPool(name)
	if err != nil {
		p.problem("disk %s: destination pool %q: %v", target, name, err)
		return "", false
	}
	pi, err := pl.Info()
	if err != nil {
		p.problem("disk %s: destination pool %q: %v", target, name, err)
		return "", false
	}
	if !fileBasedPool(pi) {
		p.problem("destination pool %q (type %s) is not an active file-based pool", name, pi.Type)
		return "", false
	}
	return pi.Path, true
}

func fileBasedPool(pi virt.PoolInfo) bool {
	return pi.Active && pi.Path != "" && (pi.Type == "dir" || pi.Type == "fs" || pi.Type == "netfs")
}

// addBackingChain plans a disk's backing files. Each lands at its own path
// on the destination, since the image headers name it.
func (p *planner) addBackingChain(target, path string, vi virt.VolumeInfo) {
	for bp, bf := vi.BackingPath, vi.BackingFormat; bp != ""; {
		if !filepath.IsAbs(bp) {
			bp = filepath.Join(filepath.Dir(path), bp)
		}
		bv, err := p.sp.volumeAt(bp, false)
		if err != nil {
			p.problem("disk %s: backing file %s: %v", target, bp, err)
			return
		}
		bi, err := bv.Info()
		if err != nil {
			p.problem("disk %s: backing file %s: %v", target, bp, err)
			return
		}
		if bi.Format == "" {
			bi.Format = bf
		}
		p.backing = append(p.backing, Artifact{Kind: KindBacking, Target: target, SrcPath: bp, Format: bi.Format,
			CapacityBytes: bi.CapacityBytes, AllocatedBytes: bi.AllocatedBytes, PhysicalBytes: bi.PhysicalBytes,
			DstPath: bp, Note: "backing file: same path on the destination (the image header names it); left on the source if anything else there uses it"})
		bp, bf = bi.BackingPath, bi.BackingFormat
	}
}

// prependBacking puts the backing files first (deepest first), so a chain
// is whole on the destination before anything that points into it.
func (p *planner) prependBacking() {
	for i := len(p.backing) - 1; i >= 0; i-- {
		b := p.backing[i]
		if !p.seen[b.SrcPath] {
			p.seen[b.SrcPath] = true
			p.arts = append([]Artifact{b}, p.arts...)
		}
	}
}

// nvramPath is the NVRAM file a definition names, "" if none.
func nvramPath(n *libvirtxml.DomainNVRam) string {
	if n == nil {
		return ""
	}
	if n.Source != nil && n.Source.File != nil {
		return n.Source.File.File
	}
	return n.NVRam
}

// addNVRAM plans the NVRAM file; one that does not exist yet (the VM never
// started) is made from the template by libvirt on the destination.
func (p *planner) addNVRAM(path string) {
	if path == "" {
		return
	}
	v, err := p.sp.volumeAt(path, false)
	switch {
	case errors.Is(err, virt.ErrNotFound):
		// Never started: libvirt creates it from the template on the destination.
	case err != nil:
		p.problem("NVRAM %s: %v", path, err)
	default:
		vi, err := v.Info()
		if err != nil {
			p.problem("NVRAM %s: %v", path, err)
			return
		}
		p.add(Artifact{Kind: KindNVRAM, SrcPath: path, Format: "raw", CapacityBytes: vi.CapacityBytes,
			AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes, DstPath: path})
	}
}
