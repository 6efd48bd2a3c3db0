package virt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// StreamBufferBytes is the chunk size of volume streams: large enough that
// a copy is not dominated by per-call overhead (libvirt's own virsh uses
// 256 KiB messages; one Recv may return several of them).
const StreamBufferBytes = 4 << 20

// Sparse streams (VIR_STORAGE_VOL_{DOWNLOAD,UPLOAD}_SPARSE_STREAM) exist since
// libvirt 3.4.0. nomad-driver-virt found them broken between 9.6.0 and
// 10.0.x, so ferry copies densely when either end falls in that range.
const (
	sparseSinceVersion      = 3004000
	sparseBrokenFromVersion = 9006000
	sparseBrokenToVersion   = 10000999
)

// StorageHost is the storage side of a host: pools, volumes and their
// streams, over the same libvirt connection (no ssh, no shared filesystem).
// Get one with StorageOf.
type StorageHost interface {
	// LibvirtVersion is the daemon's version number (major*1e6+minor*1e3+micro).
	LibvirtVersion() (uint32, error)
	// SparseStreams says whether this host (and the local client library)
	// can stream sparse volumes, and why not when it cannot.
	SparseStreams() (bool, string)
	ListPools() ([]PoolInfo, error)
	// LookupPool finds a pool by name; ErrNotFound if absent.
	LookupPool(name string) (Pool, error)
	// PoolForDir returns an active pool whose target is dir: a pool that
	// already covers it, else a transient dir pool created over it (with
	// build, the directory is created if missing). release destroys the pool
	// if PoolForDir created it and is a no-op otherwise.
	PoolForDir(dir string, build bool) (p Pool, release func() error, err error)
	// LookupVolumeByPath finds a volume of an active pool; ErrNotFound if none.
	LookupVolumeByPath(path string) (Volume, error)
}

// StorageOf returns the storage side of a host opened with Dial.
func StorageOf(h Host) (StorageHost, error) {
	if s, ok := h.(*host); ok {
		return s, nil
	}
	if s, ok := h.(StorageHost); ok {
		return s, nil
	}
	return nil, &Error{Op: "storage of " + h.URI(), Sentinel: ErrNoSupport, Message: fmt.Sprintf("host %s has no storage API (%T)", h.URI(), h)}
}

// Pool is one storage pool.
type Pool interface {
	Info() (PoolInfo, error)
	// Refresh rescans the pool's volumes (after files changed behind libvirt's back).
	Refresh() error
	LookupVolume(name string) (Volume, error)
	ListVolumes() ([]VolumeInfo, error)
	// CreateVolume creates a volume from its definition.
	CreateVolume(def libvirtxml.StorageVolume) (Volume, error)
}

// PoolInfo describes a pool.
type PoolInfo struct {
	Name           string `json:"name"`
	Type           string `json:"type"`
	Path           string `json:"path"` // target directory
	Active         bool   `json:"active"`
	Persistent     bool   `json:"persistent"`
	CapacityBytes  uint64 `json:"capacity_bytes"`
	AllocatedBytes uint64 `json:"allocated_bytes"`
	AvailableBytes uint64 `json:"available_bytes"`
}

// Volume is one storage volume.
type Volume interface {
	Info() (VolumeInfo, error)
	Delete() error
	// Download streams the volume's bytes (the file as stored, e.g. the
	// qcow2 container, not the guest's view) into w. With sparse, holes reach
	// w as Hole calls instead of zeros. ctx is checked on every chunk.
	Download(ctx context.Context, w SparseWriter, sparse bool) (StreamStats, error)
	// Upload opens a stream that overwrites the volume from offset 0. Close
	// finishes it (the data is then on the host); Abort discards it.
	Upload(ctx context.Context, sparse bool) (VolumeWriter, error)
}

// VolumeInfo is what a volume's XML says about it.
type VolumeInfo struct {
	Name           string `json:"name"`
	Path           string `json:"path"`
	Pool           string `json:"pool"`
	Format         string `json:"format"`         // raw, qcow2, ...
	CapacityBytes  uint64 `json:"capacity_bytes"` // virtual size
	AllocatedBytes uint64 `json:"allocated_bytes"`
	PhysicalBytes  uint64 `json:"physical_bytes"` // file length: what a stream carries
	BackingPath    string `json:"backing_path,omitempty"`
	BackingFormat  string `json:"backing_format,omitempty"`
	// Mtime and Ctime are the file's, as libvirt reports them
	// ("seconds.nanoseconds"); libvirt re-reads them on every XML request.
	Mtime string `json:"mtime,omitempty"`
	Ctime string `json:"ctime,omitempty"`
}

// SparseWriter receives a stream: data in order, and holes (runs of zeros
// not stored) by length.
type SparseWriter interface {
	Write(p []byte) (int, error)
	Hole(length int64) error
}

// VolumeWriter is an upload in progress.
type VolumeWriter interface {
	SparseWriter
	Close() error
	Abort() error
}

// StreamStats counts what a stream carried.
type StreamStats struct {
	DataBytes int64 `json:"data_bytes"`
	HoleBytes int64 `json:"hole_bytes"`
	Sparse    bool  `json:"sparse"`
}

func (h *host) LibvirtVersion() (uint32, error) {
	v, err := h.c.GetLibVersion()
	return v, wrap("libvirt version of "+h.uri, err)
}

// SparseStreamsFor is the version gate on its own, for tests and plans.
func SparseStreamsFor(v uint32) (bool, string) {
	switch {
	case v == 0:
		return false, "libvirt version unknown"
	case v < sparseSinceVersion:
		return false, fmt.Sprintf("libvirt %s predates sparse streams (3.4.0)", version(v))
	case v >= sparseBrokenFromVersion && v <= sparseBrokenToVersion:
		return false, fmt.Sprintf("libvirt %s has broken sparse streams (9.6-10.0)", version(v))
	}
	return true, ""
}

func (h *host) SparseStreams() (bool, string) {
	lv, err := libvirt.GetVersion()
	if err != nil {
		return false, "client library version unknown"
	}
	if ok, why := SparseStreamsFor(lv); !ok {
		return false, "this machine's " + why
	}
	v, err := h.c.GetLibVersion()
	if err != nil {
		return false, "libvirt version of " + h.uri + " unknown"
	}
	if ok, why := SparseStreamsFor(v); !ok {
		return false, h.uri + ": " + why
	}
	return true, ""
}

// wrapStorage adds the storage error codes errors.go does not map.
func wrapStorage(op string, err error) error {
	if err == nil {
		return nil
	}
	var lerr libvirt.Error
	if errors.As(err, &lerr) {
		switch lerr.Code {
		case libvirt.ERR_STORAGE_VOL_EXIST:
			return &Error{Op: op, Sentinel: ErrExists, Code: int(lerr.Code), Message: lerr.Message}
		case libvirt.ERR_NO_STORAGE_POOL, libvirt.ERR_NO_STORAGE_VOL:
			return &Error{Op: op, Sentinel: ErrNotFound, Code: int(lerr.Code), Message: lerr.Message}
		}
	}
	return wrap(op, err)
}

type pool struct {
	h *host
	p *libvirt.StoragePool
}

func newPool(h *host, p *libvirt.StoragePool) *pool {
	w := &pool{h: h, p: p}
	runtime.SetFinalizer(w, func(w *pool) { w.p.Free() })
	return w
}

func (p *pool) name() string {
	n, err := p.p.GetName()
	if err != nil {
		return "?"
	}
	return n
}

func (h *host) ListPools() ([]PoolInfo, error) {
	ps, err := h.c.ListAllStoragePools(0)
	if err != nil {
		return nil, wrapStorage("list storage pools on "+h.uri, err)
	}
	out := make([]PoolInfo, 0, len(ps))
	for i := range ps {
		p := &pool{h: h, p: &ps[i]}
		info, err := p.Info()
		ps[i].Free()
		if err != nil {
			continue
		}
		out = append(out, info)
	}
	return out, nil
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
	out := make([]VolumeInfo, 0, len(vs))
	for i := range vs {
		v := &volume{h: p.h, v: &vs[i]}
		info, err := v.Info()
		vs[i].Free()
		if err != nil {
			continue
		}
		out = append(out, info)
	}
	return out, nil
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

type volume struct {
	h *host
	v *libvirt.StorageVol
}

func newVolume(h *host, v *libvirt.StorageVol) *volume {
	w := &volume{h: h, v: v}
	runtime.SetFinalizer(w, func(w *volume) { w.v.Free() })
	return w
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

func (v *volume) Download(ctx context.Context, w SparseWriter, sparse bool) (StreamStats, error) {
	stats := StreamStats{Sparse: sparse}
	op := v.op("download")
	st, err := v.h.c.NewStream(0)
	if err != nil {
		return stats, wrapStorage(op, err)
	}
	defer st.Free()
	var flags libvirt.StorageVolDownloadFlags
	if sparse {
		flags = libvirt.STORAGE_VOL_DOWNLOAD_SPARSE_STREAM
	}
	if err := v.v.Download(st, 0, 0, flags); err != nil {
		return stats, wrapStorage(op, err)
	}
	buf := make([]byte, StreamBufferBytes)
	abort := func(err error) (StreamStats, error) {
		_ = st.Abort()
		return stats, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return abort(&Error{Op: op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(ctx))})
		}
		var n int
		if sparse {
			n, err = st.RecvFlags(buf, libvirt.STREAM_RECV_STOP_AT_HOLE)
		} else {
			n, err = st.Recv(buf)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return abort(wrapStorage(op, err))
		}
		switch {
		case n == -3: // at a hole
			hole, err := st.RecvHole(0)
			if err != nil {
				return abort(wrapStorage(op, err))
			}
			if err := w.Hole(hole); err != nil {
				return abort(err)
			}
			stats.HoleBytes += hole
		case n > 0:
			if _, err := w.Write(buf[:n]); err != nil {
				return abort(err)
			}
			stats.DataBytes += int64(n)
		}
	}
	return stats, wrapStorage(op, st.Finish())
}

func (v *volume) Upload(ctx context.Context, sparse bool) (VolumeWriter, error) {
	op := v.op("upload")
	st, err := v.h.c.NewStream(0)
	if err != nil {
		return nil, wrapStorage(op, err)
	}
	var flags libvirt.StorageVolUploadFlags
	if sparse {
		flags = libvirt.STORAGE_VOL_UPLOAD_SPARSE_STREAM
	}
	if err := v.v.Upload(st, 0, 0, flags); err != nil {
		st.Free()
		return nil, wrapStorage(op, err)
	}
	return &upload{ctx: ctx, st: st, sparse: sparse, op: op}, nil
}

type upload struct {
	ctx    context.Context
	st     *libvirt.Stream
	sparse bool
	op     string
	done   bool
	zeros  []byte
}

func (u *upload) Write(p []byte) (int, error) {
	if err := u.ctx.Err(); err != nil {
		return 0, &Error{Op: u.op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(u.ctx))}
	}
	sent := 0
	for sent < len(p) {
		n, err := u.st.Send(p[sent:])
		if err != nil {
			return sent, wrapStorage(u.op, err)
		}
		if n > 0 {
			sent += n
		}
	}
	return sent, nil
}

// Hole sends a hole, or zeros when the stream is dense.
func (u *upload) Hole(length int64) error {
	if u.sparse {
		if err := u.ctx.Err(); err != nil {
			return &Error{Op: u.op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(u.ctx))}
		}
		return wrapStorage(u.op, u.st.SendHole(length, 0))
	}
	if u.zeros == nil {
		u.zeros = make([]byte, StreamBufferBytes)
	}
	for length > 0 {
		n := min(length, int64(len(u.zeros)))
		if _, err := u.Write(u.zeros[:n]); err != nil {
			return err
		}
		length -= n
	}
	return nil
}

func (u *upload) Close() error {
	if u.done {
		return nil
	}
	u.done = true
	defer u.st.Free()
	return wrapStorage(u.op, u.st.Finish())
}

func (u *upload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	defer u.st.Free()
	return wrapStorage(u.op+" (abort)", u.st.Abort())
}
