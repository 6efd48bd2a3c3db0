package virt

import (
	"context"
	"time"
)

// Host is a connection to one libvirt daemon. Implementations must be safe
// for concurrent use: the orchestrator samples job stats while a migration
// call blocks on another goroutine.
type Host interface {
	URI() string
	Close() error
	// Identity names the machine behind the connection: two URIs that reach
	// the same libvirtd report the same UUID.
	Identity() (Identity, error)
	Capacity() (Capacity, error)
	ListDomains() ([]DomainInfo, error)
	// LookupDomain finds a domain by name or UUID; ErrNotFound if absent.
	LookupDomain(nameOrUUID string) (Domain, error)
	// CompareCPU checks whether this host can run a guest with the given CPU
	// definition; ErrCPUIncompatible (with libvirt's reason) if not.
	CompareCPU(spec DomainSpec) error
	// Subscribe delivers every domain event and the connection's close until
	// ctx ends. The channel is closed after ctx ends or the connection closes.
	Subscribe(ctx context.Context) (<-chan Event, error)
	// DefineXML defines a persistent domain (used by recovery and tests).
	DefineXML(xml string) (Domain, error)
}

// Domain is one domain on one host.
type Domain interface {
	Info() (DomainInfo, error)
	// XML returns the domain's definition; migratable strips host-local parts
	// the way libvirt does for migration.
	XML(migratable bool) (string, error)
	// Spec is the parsed subset of the definition that ferry's checks need.
	Spec() (DomainSpec, error)
	// Migrate runs a peer-to-peer migration and blocks until it ends. When ctx
	// is cancelled the migration job is aborted and Migrate returns ErrAborted.
	Migrate(ctx context.Context, p MigrateParams) error
	// JobStats reports the active job, or the last completed one.
	JobStats(completed bool) (JobStats, error)
	AbortJob() error
	SetMaxDowntime(d time.Duration) error
	SetMaxSpeed(mibPerSec uint64) error
	StartPostcopy() error
	Suspend() error
	Resume() error
	Start() error
	Destroy() error
	// SetThrottle sets auto-converge's throttle steps and trigger (percent).
	SetThrottle(initialPct, incrementPct, triggerPct int) error
	// MeasureDirtyRate samples the guest's dirty rate (bytes/s) over period.
	MeasureDirtyRate(ctx context.Context, period time.Duration) (uint64, error)
	// Undefine removes the persistent definition; keepNVRAM leaves the NVRAM
	// file (needed when the destination uses the same file on shared storage).
	Undefine(keepNVRAM bool) error
}

// State is a domain's run state.
type State string

// Domain states, as libvirt names them in virsh.
const (
	StateNoState   State = "nostate"
	StateRunning   State = "running"
	StateBlocked   State = "blocked"
	StatePaused    State = "paused"
	StateShutdown  State = "shutdown"
	StateShutoff   State = "shutoff"
	StateCrashed   State = "crashed"
	StatePMSuspend State = "pmsuspended"
)

// Active reports whether a QEMU process exists for the domain.
func (s State) Active() bool {
	return s != StateShutoff && s != StateNoState && s != StateCrashed
}

// DomainInfo is a domain's identity and state.
type DomainInfo struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	State       State  `json:"state"`
	Reason      string `json:"reason,omitempty"` // e.g. "migrating", "postcopy", "user"
	MemoryBytes uint64 `json:"memory_bytes"`     // maximum memory
	VCPUs       int    `json:"vcpus"`
	Persistent  bool   `json:"persistent"`
}

// DomainSpec is what ferry's pre-flight checks read from a definition.
type DomainSpec struct {
	Name        string
	UUID        string
	Type        string // "kvm" or "qemu"
	Arch        string
	Machine     string
	MemoryBytes uint64
	VCPUs       int
	CPUXML      string // the <cpu> element, empty if the domain has none
	Disks       []Disk
	NVRAM       string
}

// Disk is one disk or cdrom of a domain.
type Disk struct {
	Target   string // vda, sdb...
	Device   string // disk, cdrom
	Source   string // file path, empty for network/empty drives
	ReadOnly bool
	Shared   bool
}

// Identity names a host.
type Identity struct {
	Hostname string
	UUID     string
	Arch     string
}

// Capacity is what a host has to offer.
type Capacity struct {
	CPUs            int    `json:"cpus"`
	MemoryBytes     uint64 `json:"memory_bytes"`
	FreeMemoryBytes uint64 `json:"free_memory_bytes"`
	LibvirtVersion  string `json:"libvirt_version"`
	QEMUVersion     string `json:"qemu_version"`
}

// JobType tells whether a job is running.
type JobType string

// Job types.
const (
	JobNone      JobType = "none"
	JobBounded   JobType = "bounded"
	JobUnbounded JobType = "unbounded"
	JobCompleted JobType = "completed"
	JobFailed    JobType = "failed"
	JobCancelled JobType = "cancelled"
)

// JobStats is a migration job's progress as libvirt reports it.
type JobStats struct {
	Type             JobType
	Elapsed          time.Duration
	DataTotal        uint64
	DataProcessed    uint64
	DataRemaining    uint64
	MemTotal         uint64
	MemProcessed     uint64
	MemRemaining     uint64
	MemBytesPerSec   uint64
	DirtyPagesPerSec uint64
	PageSize         uint64
	Iteration        int
	Throttle         int // auto-converge CPU throttle, percent
	PostcopyRequests uint64
	Downtime         time.Duration // measured (completed) or expected (active)
	DowntimeSet      bool
	ErrorMessage     string
}

// DirtyBytesPerSec converts libvirt's page rate to bytes.
func (j JobStats) DirtyBytesPerSec() uint64 {
	ps := j.PageSize
	if ps == 0 {
		ps = 4096
	}
	return j.DirtyPagesPerSec * ps
}

// MigrateParams describes one migration.
type MigrateParams struct {
	DestURI               string // libvirt URI of the destination daemon
	DataURI               string // where QEMU sends memory, e.g. tcp://127.0.10.2
	BandwidthMiBps        uint64 // 0 = unlimited
	CopyStorage           bool   // copy non-shared disks (--copy-storage-all)
	Postcopy              bool   // allow a later StartPostcopy
	AutoConverge          bool
	AutoConvergeInitial   int
	AutoConvergeIncrement int
	// TLS encrypts the migration streams (VIR_MIGRATE_TLS): both hosts'
	// QEMU need certificates (qemu.conf migrate_tls_x509_cert_dir).
	TLS bool
	// TLSDestination is the name the destination's certificate carries when
	// it is not the data URI's host (VIR_MIGRATE_PARAM_TLS_DESTINATION).
	TLSDestination string
}

// EventKind classifies an Event.
type EventKind string

// Event kinds.
const (
	EventLifecycle    EventKind = "lifecycle"
	EventIteration    EventKind = "migration-iteration"
	EventJobCompleted EventKind = "job-completed"
	EventClosed       EventKind = "connection-closed"
)

// Event is something a host reported.
type Event struct {
	Kind      EventKind
	At        time.Time
	Host      string // URI
	Domain    string
	UUID      string
	Lifecycle string // e.g. "stopped"
	Detail    string // e.g. "failed", "migrated", "crashed"
	Iteration int
	Job       *JobStats
	Reason    string // close reason
}
