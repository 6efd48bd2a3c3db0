package virt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

type pool struct {
	h *host
	p *libvirt.StoragePool
}

func newPool(h *host, p *libvirt.StoragePool) *pool {
	return freeWithWrapper(&pool{h: h, p: p}, p.Free)
}

func (p *pool) name() string { return nameOf(p.p) }

func (h *host) ListPools() ([]PoolInfo, error) {
	ps, err := h.c.ListAllStoragePools(0)
	if err != nil {
		return nil, wrapStorage("list storage pools on "+h.uri, err)
	}
	return describeAll(ps, func(p *libvirt.StoragePool) (PoolInfo, error) { return (&pool{h: h, p: p}).Info() }, (*libvirt.StoragePool).Free), nil
}

func (h *host) LookupPool(name string) (Pool, error) {
	p, err := h.c.LookupStoragePoolByName(name)
	if err != nil {
		return nil, wrapStorage(fmt.Sprintf("storage pool %q on %s", name, h.uri), err)
	}
	return newPool(h, p), nil
}

func (p *pool) Info() (PoolInfo, error) {
	op := fmt.Sprintf("storage pool %s on %s", p.name(), p.h.uri)
	x, err := p.p.GetXMLDesc(0)
	if err != nil {
		return PoolInfo{}, wrapStorage(op, err)
	}
	var px libvirtxml.StoragePool
	if err := px.Unmarshal(x); err != nil {
		return PoolInfo{}, &Error{Op: op, Sentinel: ErrFailed, Message: err.Error()}
	}
	info := PoolInfo{Name: px.Name, Type: px.Type}
	if px.Target != nil {
		info.Path = px.Target.Path
	}
	info.Active, _ = p.p.IsActive()
	info.Persistent, _ = p.p.IsPersistent()
	if info.Active {
		pi, err := p.p.GetInfo()
		if err != nil {
			return PoolInfo{}, wrapStorage(op, err)
		}
		info.CapacityBytes, info.AllocatedBytes, info.AvailableBytes = pi.Capacity, pi.Allocation, pi.Available
	}
	return info, nil
}

func (p *pool) Refresh() error {
	return wrapStorage(fmt.Sprintf("refresh storage pool %s on %s", p.name(), p.h.uri), p.p.Refresh(0))
}

func (p *pool) LookupVolume(name string) (Volume, error) {
	v, err := p.p.LookupStorageVolByName(name)
	if err != nil {
		return nil, wrapStorage(fmt.Sprintf("volume %q in pool %s on %s", name, p.name(), p.h.uri), err)
	}
	return newVolume(p.h, v), nil
}

func (p *pool) ListVolumes() ([]VolumeInfo, error) {
	vs, err := p.p.ListAllStorageVolumes(0)
	if err != nil {
		return nil, wrapStorage(fmt.Sprintf("list volumes of pool %s on %s", p.name(), p.h.uri), err)
	}
	return describeAll(vs, func(v *libvirt.StorageVol) (VolumeInfo, error) { return (&volume{h: p.h, v: v}).Info() }, (*libvirt.StorageVol).Free), nil
}

func (p *pool) CreateVolume(def libvirtxml.StorageVolume) (Volume, error) {
	op := fmt.Sprintf("create volume %s in pool %s on %s", def.Name, p.name(), p.h.uri)
	x, err := def.Marshal()
	if err != nil {
		return nil, &Error{Op: op, Sentinel: ErrFailed, Message: err.Error()}
	}
	v, err := p.p.StorageVolCreateXML(x, 0)
	if err != nil {
		return nil, wrapStorage(op, err)
	}
	return newVolume(p.h, v), nil
}

// transientPoolName names the pool ferry lays over a directory; the same
// directory always gets the same name, so a leftover is found and reused.
func transientPoolName(dir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dir)))
	return "ferry-" + hex.EncodeToString(sum[:6])
}

func (h *host) PoolForDir(dir string, build bool) (Pool, func() error, error) {
	dir = filepath.Clean(dir)
	noop := func() error { return nil }
	op := fmt.Sprintf("storage pool over %s on %s", dir, h.uri)
	ps, err := h.c.ListAllStoragePools(0)
	if err != nil {
		return nil, nil, wrapStorage(op, err)
	}
	var found *libvirt.StoragePool
	for i := range ps {
		if found == nil {
			x, err := ps[i].GetXMLDesc(0)
			var px libvirtxml.StoragePool
			if err == nil && px.Unmarshal(x) == nil && px.Target != nil && filepath.Clean(px.Target.Path) == dir && (px.Type == "dir" || px.Type == "fs" || px.Type == "netfs") {
				p := ps[i]
				found = &p
				continue
			}
		}
		ps[i].Free()
	}
	if found != nil {
		p := newPool(h, found)
		if active, _ := found.IsActive(); !active {
			return nil, nil, &Error{Op: op, Sentinel: ErrInvalidState, Message: fmt.Sprintf("pool %s covers %s but is not active (virsh pool-start %s)", p.name(), dir, p.name())}
		}
		// An operator's pool, or a transient one of ferry's (a leftover, or
		// another move's): use it and leave it be.
		return p, noop, nil
	}
	px := libvirtxml.StoragePool{Type: "dir", Name: transientPoolName(dir), Target: &libvirtxml.StoragePoolTarget{Path: dir}}
	x, err := px.Marshal()
	if err != nil {
		return nil, nil, &Error{Op: op, Sentinel: ErrFailed, Message: err.Error()}
	}
	var flags libvirt.StoragePoolCreateFlags
	if build {
		flags = libvirt.STORAGE_POOL_CREATE_WITH_BUILD
	}
	lp, err := h.c.StoragePoolCreateXML(x, flags)
	if err != nil {
		// Lost a race with another ferry over the same directory: use theirs.
		if lp2, lerr := h.c.LookupStoragePoolByName(px.Name); lerr == nil {
			return newPool(h, lp2), noop, nil
		}
		return nil, nil, wrapStorage(op, err)
	}
	p := newPool(h, lp)
	release := func() error {
		return wrapStorage("destroy transient "+op, lp.Destroy())
	}
	return p, release, nil
}

func (h *host) LookupVolumeByPath(path string) (Volume, error) {
	v, err := h.c.LookupStorageVolByPath(path)
	if err != nil {
		return nil, wrapStorage(fmt.Sprintf("volume %s on %s", path, h.uri), err)
	}
	return newVolume(h, v), nil
}
