package coldmove

import (
	"fmt"
	"path/filepath"

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
	plan.Sparse, plan.SparseNote = sparseMode(src, dst)
	p := newPlanner(plan, src, dst, opt)
	defer p.close()

	if dx.Devices != nil {
		for _, d := range dx.Devices.Disks {
			p.addDisk(d)
		}
	}
	p.prependBacking()
	if dx.OS != nil {
		p.addNVRAM(nvramPath(dx.OS.NVRam))
	}
	p.addLogs(dx.Name)

	arts := p.arts
	numberArtifacts(arts, opt.Previous)
	plan.Artifacts = arts
	plan.Problems = append(plan.Problems, checkClashes(arts)...)
	plan.Problems = append(plan.Problems, checkDestination(plan, dst, p.dp, opt.Previous)...)
	for _, a := range arts {
		plan.TotalBytes += a.PhysicalBytes
		plan.BytesToMove += a.WireBytes(plan.Sparse)
	}
	return plan, nil
}

// sparseMode says whether both ends can stream sparse volumes, and if not
// which one cannot and why.
func sparseMode(src, dst Storage) (bool, string) {
	srcOK, srcWhy := src.SparseStreams()
	dstOK, dstWhy := dst.SparseStreams()
	switch {
	case !srcOK:
		return false, "dense copy: source " + srcWhy
	case !dstOK:
		return false, "dense copy: destination " + dstWhy
	}
	return true, ""
}

// numberArtifacts gives the artifacts their copy order and planned state,
// and keeps the destination paths an interrupted run of the move chose.
func numberArtifacts(arts []Artifact, prev map[string]Artifact) {
	for i := range arts {
		a := &arts[i]
		a.Index, a.State = i, StatePlanned
		if p, ok := prev[a.Key()]; ok && p.DstPath != "" {
			a.DstPath = p.DstPath
		}
	}
}
