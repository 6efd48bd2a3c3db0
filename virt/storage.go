package virt

import (
	"context"
	"errors"
	"fmt"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

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
