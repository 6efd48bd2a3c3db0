package virt

import (
	"fmt"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

type volume struct {
	h *host
	v *libvirt.StorageVol
}

func newVolume(h *host, v *libvirt.StorageVol) *volume {
	return freeWithWrapper(&volume{h: h, v: v}, v.Free)
}

func (v *volume) op(what string) string {
	p, err := v.v.GetPath()
	if err != nil {
		p = "?"
	}
	return fmt.Sprintf("%s %s on %s", what, p, v.h.uri)
}

func (v *volume) Info() (VolumeInfo, error) {
	x, err := v.v.GetXMLDesc(0)
	if err != nil {
		return VolumeInfo{}, wrapStorage(v.op("volume"), err)
	}
	info, err := ParseVolumeXML(x)
	if err != nil {
		return VolumeInfo{}, &Error{Op: v.op("volume"), Sentinel: ErrFailed, Message: err.Error()}
	}
	if p, err := v.v.LookupPoolByVolume(); err == nil {
		info.Pool, _ = p.GetName()
		p.Free()
	}
	if info.Path == "" {
		info.Path, _ = v.v.GetPath()
	}
	return info, nil
}

// ParseVolumeXML reads a volume definition (virsh vol-dumpxml).
func ParseVolumeXML(x string) (VolumeInfo, error) {
	var vx libvirtxml.StorageVolume
	if err := vx.Unmarshal(x); err != nil {
		return VolumeInfo{}, err
	}
	info := VolumeInfo{Name: vx.Name}
	if vx.Capacity != nil {
		info.CapacityBytes = volBytes(vx.Capacity)
	}
	if vx.Allocation != nil {
		info.AllocatedBytes = volBytes(vx.Allocation)
	}
	if vx.Physical != nil {
		info.PhysicalBytes = volBytes(vx.Physical)
	}
	if vx.Target != nil {
		info.Path = vx.Target.Path
		if vx.Target.Format != nil {
			info.Format = vx.Target.Format.Type
		}
		if ts := vx.Target.Timestamps; ts != nil {
			info.Mtime, info.Ctime = ts.Mtime, ts.Ctime
		}
	}
	if info.PhysicalBytes == 0 && (info.Format == "raw" || info.Format == "") {
		info.PhysicalBytes = info.CapacityBytes
	}
	if vx.BackingStore != nil {
		info.BackingPath = vx.BackingStore.Path
		if vx.BackingStore.Format != nil {
			info.BackingFormat = vx.BackingStore.Format.Type
		}
	}
	return info, nil
}

func volBytes(s *libvirtxml.StorageVolumeSize) uint64 {
	if s.Unit == "" || s.Unit == "bytes" || s.Unit == "B" || s.Unit == "b" {
		return s.Value
	}
	m := memBytes(1, s.Unit)
	return s.Value * m
}

func (v *volume) Delete() error {
	return wrapStorage(v.op("delete volume"), v.v.Delete(0))
}
