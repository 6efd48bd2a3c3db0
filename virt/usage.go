package virt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// HostUsage is who uses which file on one host: every domain (running and
// defined) with the files its definitions name, and every volume of every
// active pool with its backing file. It is read, never changed, so the
// decision what may be deleted can be a pure function over it.
type HostUsage struct {
	Domains []DomainFiles `json:"domains"`
	Volumes []VolumeInfo  `json:"volumes"`
	// Pools are the active pools; transient ones of ferry's are named "ferry-...".
	Pools []PoolInfo `json:"pools"`
	// Unresolved: files a domain names whose backing chain could not be
	// read (not in a pool, directory unreadable).
	Unresolved []string `json:"unresolved,omitempty"`
}

// DomainFiles is one domain and the files it names.
type DomainFiles struct {
	Name       string    `json:"name"`
	UUID       string    `json:"uuid"`
	State      State     `json:"state"`
	Persistent bool      `json:"persistent"`
	Files      []FileRef `json:"files"`
}

// FileRef is one file a domain uses.
type FileRef struct {
	Path string `json:"path"`
	// Use says how: "disk vda", "backing file of vda", "nvram", "kernel"...
	Use      string `json:"use"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Shared   bool   `json:"shared,omitempty"`
}

// ObserveUsage lists every domain's files (live and persistent definitions,
// their disks' backing chains) and every pool volume's backing file on h.
// Pools are refreshed first so files created behind libvirt's back count;
// a disk outside any pool has its chain read through a transient pool over
// its directory, destroyed again before returning.
func ObserveUsage(h Host) (*HostUsage, error) {
	hh, ok := h.(*host)
	if !ok {
		return nil, &Error{Op: "observe usage on " + h.URI(), Sentinel: ErrNoSupport, Message: fmt.Sprintf("%T has no storage API", h)}
	}
	o := &usageObserver{h: hh, u: &HostUsage{}, byPath: map[string]VolumeInfo{}, probed: map[string]bool{}}
	defer o.release()
	if err := o.addPools(); err != nil {
		return nil, err
	}
	doms, err := hh.c.ListAllDomains(0)
	if err != nil {
		return nil, wrap("list domains on "+hh.uri, err)
	}
	for i := range doms {
		d := newDomain(hh, &doms[i])
		info, err := d.Info()
		if err != nil {
			continue // vanished between list and query
		}
		df, err := o.domainFiles(d, info)
		if err != nil {
			return nil, err
		}
		o.u.Domains = append(o.u.Domains, df)
	}
	sort.Slice(o.u.Domains, func(i, j int) bool { return o.u.Domains[i].Name < o.u.Domains[j].Name })
	sort.Strings(o.u.Unresolved)
	return o.u, nil
}

// usageObserver is one ObserveUsage call: the usage found so far, the
// volumes by path for following backing chains, and the transient pools it
// opened to probe files outside the pools.
type usageObserver struct {
	h        *host
	u        *HostUsage
	byPath   map[string]VolumeInfo
	probed   map[string]bool
	releases []func() error
}

func (o *usageObserver) release() {
	for i := len(o.releases) - 1; i >= 0; i-- {
		_ = o.releases[i]()
	}
}

// addPools lists every active pool and its volumes.
func (o *usageObserver) addPools() error {
	ps, err := o.h.c.ListAllStoragePools(libvirt.CONNECT_LIST_STORAGE_POOLS_ACTIVE)
	if err != nil {
		return wrapStorage("list storage pools on "+o.h.uri, err)
	}
	for i := range ps {
		p := &pool{h: o.h, p: &ps[i]}
		// A pool with an upload in progress refuses a refresh: list what it knows.
		_ = p.p.Refresh(0)
		info, ierr := p.Info()
		vols, verr := p.ListVolumes()
		ps[i].Free()
		if ierr != nil || verr != nil {
			return errors.Join(ierr, verr)
		}
		o.u.Pools = append(o.u.Pools, info)
		for _, v := range vols {
			v = absBacking(v, filepath.Dir(v.Path))
			o.u.Volumes = append(o.u.Volumes, v)
			o.byPath[filepath.Clean(v.Path)] = v
		}
	}
	return nil
}

// absBacking makes a relative backing path absolute: qemu resolves it
// against the directory of the image that names it.
func absBacking(v VolumeInfo, dir string) VolumeInfo {
	if v.BackingPath != "" && !filepath.IsAbs(v.BackingPath) {
		v.BackingPath = filepath.Join(dir, v.BackingPath)
	}
	return v
}

// chainOf follows a file's backing chain through the volumes known so
// far, probing files outside the pools through a transient pool.
func (o *usageObserver) chainOf(path string) []VolumeInfo {
	var out []VolumeInfo
	for p, seen := filepath.Clean(path), map[string]bool{}; p != "" && !seen[p]; {
		seen[p] = true
		v, ok := o.byPath[p]
		if !ok && !o.probed[p] && !strings.HasPrefix(p, "/dev/") {
			o.probed[p] = true
			if v, ok = o.probe(p); !ok {
				o.u.Unresolved = append(o.u.Unresolved, p)
			}
		}
		if !ok {
			break
		}
		out = append(out, v)
		p = ""
		if v.BackingPath != "" {
			p = filepath.Clean(v.BackingPath)
		}
	}
	return out
}

// probe reads a file outside the known volumes through a transient pool
// over its directory (released at the end of the observation).
func (o *usageObserver) probe(p string) (VolumeInfo, bool) {
	pl, release, err := o.h.PoolForDir(filepath.Dir(p), false)
	if err != nil {
		return VolumeInfo{}, false
	}
	o.releases = append(o.releases, release)
	_ = pl.Refresh()
	vol, err := pl.LookupVolume(filepath.Base(p))
	if err != nil {
		return VolumeInfo{}, false
	}
	vi, err := vol.Info()
	if err != nil {
		return VolumeInfo{}, false
	}
	vi = absBacking(vi, filepath.Dir(p))
	o.byPath[p] = vi
	return vi, true
}

// domainFiles lists the files of one domain's live and (for a running
// persistent domain) inactive definitions, with their disks' backing chains.
func (o *usageObserver) domainFiles(d *domain, info DomainInfo) (DomainFiles, error) {
	df := DomainFiles{Name: info.Name, UUID: info.UUID, State: info.State, Persistent: info.Persistent}
	xmls := []libvirt.DomainXMLFlags{0}
	if info.State.Active() && info.Persistent {
		xmls = append(xmls, libvirt.DOMAIN_XML_INACTIVE)
	}
	seen := map[string]bool{}
	add := func(f FileRef) {
		if f.Path == "" {
			return
		}
		f.Path = filepath.Clean(f.Path)
		if k := f.Path + "\x00" + f.Use; !seen[k] {
			seen[k] = true
			df.Files = append(df.Files, f)
		}
	}
	for _, fl := range xmls {
		x, err := d.d.GetXMLDesc(fl)
		if err != nil {
			return DomainFiles{}, wrap(d.op("XML of"), err)
		}
		for _, f := range DomainFileRefs(x, o.h.volumePath) {
			add(f)
			if !strings.HasPrefix(f.Use, "disk ") {
				continue
			}
			for j, v := range o.chainOf(f.Path) {
				if j > 0 {
					add(FileRef{Path: v.Path, Use: "backing file of " + strings.TrimPrefix(f.Use, "disk "), ReadOnly: true})
				}
			}
		}
	}
	return df, nil
}

func (h *host) volumePath(poolName, vol string) string {
	p, err := h.c.LookupStoragePoolByName(poolName)
	if err != nil {
		return ""
	}
	defer p.Free()
	v, err := p.LookupStorageVolByName(vol)
	if err != nil {
		return ""
	}
	defer v.Free()
	path, _ := v.GetPath()
	return path
}

// DomainFileRefs lists the files a domain definition names: disks with
// the backing chain the (live) XML shows, NVRAM, kernel, initrd, DTB.
// volumePath resolves a <source pool= volume=> disk; nil skips them.
func DomainFileRefs(xml string, volumePath func(pool, vol string) string) []FileRef {
	var dx libvirtxml.Domain
	if err := dx.Unmarshal(xml); err != nil {
		return nil
	}
	var out []FileRef
	if dx.OS != nil {
		if n := dx.OS.NVRam; n != nil {
			p := n.NVRam
			if n.Source != nil && n.Source.File != nil {
				p = n.Source.File.File
			}
			out = append(out, FileRef{Path: p, Use: "nvram"})
		}
		for use, p := range map[string]string{"kernel": dx.OS.Kernel, "initrd": dx.OS.Initrd, "dtb": dx.OS.DTB} {
			if p != "" {
				out = append(out, FileRef{Path: p, Use: use, ReadOnly: true})
			}
		}
	}
	if dx.Devices == nil {
		return out
	}
	for _, d := range dx.Devices.Disks {
		target := "?"
		if d.Target != nil {
			target = d.Target.Dev
		}
		ro := d.ReadOnly != nil || d.Device == "cdrom"
		sh := d.Shareable != nil
		if p := diskSourcePath(d.Source, volumePath); p != "" {
			out = append(out, FileRef{Path: p, Use: "disk " + target, ReadOnly: ro, Shared: sh})
		}
		for b := d.BackingStore; b != nil; b = b.BackingStore {
			if p := diskSourcePath(b.Source, volumePath); p != "" {
				out = append(out, FileRef{Path: p, Use: "backing file of " + target, ReadOnly: true})
			}
		}
	}
	return out
}

func diskSourcePath(s *libvirtxml.DomainDiskSource, volumePath func(pool, vol string) string) string {
	switch {
	case s == nil:
		return ""
	case s.File != nil:
		return s.File.File
	case s.Block != nil:
		return s.Block.Dev
	case s.Volume != nil && volumePath != nil:
		return volumePath(s.Volume.Pool, s.Volume.Volume)
	}
	return ""
}
