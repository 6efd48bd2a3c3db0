package coldmove

import (
	"fmt"

	"libvirt.org/go/libvirtxml"
)

// Mapping says where a VM's files are on the destination.
type Mapping struct {
	Paths map[string]string // source path -> destination path (disks, backing files, NVRAM)
	Pools map[string]string // disk target -> destination pool, for <source pool= volume=> disks
}

// MappingOf derives the mapping from a plan.
func MappingOf(p *Plan) Mapping {
	m := Mapping{Paths: map[string]string{}, Pools: map[string]string{}}
	for _, a := range p.Artifacts {
		switch a.Kind {
		case KindDisk:
			m.Paths[a.SrcPath] = a.DstPath
			if a.Target != "" {
				m.Pools[a.Target] = a.DstPool
			}
		case KindBacking, KindNVRAM:
			m.Paths[a.SrcPath] = a.DstPath
		}
	}
	return m
}

// Rewrite returns the domain definition for the destination: disk sources,
// their backing stores and the NVRAM path point at the destination's copies.
// Everything else is kept as libvirtxml reads it.
func Rewrite(domainXML string, m Mapping) (string, error) {
	var dx libvirtxml.Domain
	if err := dx.Unmarshal(domainXML); err != nil {
		return "", fmt.Errorf("parse domain XML: %w", err)
	}
	mapPath := func(p string) string {
		if q, ok := m.Paths[p]; ok {
			return q
		}
		return p
	}
	var mapSource func(s *libvirtxml.DomainDiskSource)
	mapSource = func(s *libvirtxml.DomainDiskSource) {
		if s != nil && s.File != nil {
			s.File.File = mapPath(s.File.File)
		}
	}
	if dx.Devices != nil {
		for i := range dx.Devices.Disks {
			d := &dx.Devices.Disks[i]
			if d.Source != nil {
				mapSource(d.Source)
				if d.Source.Volume != nil && d.Target != nil {
					if pool, ok := m.Pools[d.Target.Dev]; ok && pool != "" {
						d.Source.Volume.Pool = pool
					}
				}
			}
			for b := d.BackingStore; b != nil; b = b.BackingStore {
				mapSource(b.Source)
			}
		}
	}
	if dx.OS != nil && dx.OS.NVRam != nil {
		if dx.OS.NVRam.NVRam != "" {
			dx.OS.NVRam.NVRam = mapPath(dx.OS.NVRam.NVRam)
		}
		mapSource(dx.OS.NVRam.Source)
	}
	out, err := dx.Marshal()
	if err != nil {
		return "", fmt.Errorf("write domain XML: %w", err)
	}
	return out, nil
}
