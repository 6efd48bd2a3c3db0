package virt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Keepalive: a host that stops answering is declared gone after about
// keepaliveInterval*(keepaliveCount+1), instead of blocking calls forever.
const (
	keepaliveIntervalSec = 5
	keepaliveCount       = 3
)

var eventLoopOnce sync.Once

// startEventLoop runs libvirt's default event loop, which both events and
// keepalive need; it must exist before the first connection is opened.
func startEventLoop() {
	eventLoopOnce.Do(func() {
		if err := libvirt.EventRegisterDefaultImpl(); err != nil {
			panic(fmt.Sprintf("libvirt event loop: %v", err))
		}
		go func() {
			for {
				_ = libvirt.EventRunDefaultImpl()
			}
		}()
	})
}

// Dial opens a connection to a libvirt daemon. It gives up when ctx ends even
// if libvirt's own connect is still waiting on a hung daemon.
func Dial(ctx context.Context, uri string) (Host, error) {
	if err := ValidateURI(uri); err != nil {
		return nil, err
	}
	startEventLoop()
	type result struct {
		c   *libvirt.Connect
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := libvirt.NewConnect(uri)
		ch <- result{c, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() { // close the connection if it ever completes
			if late := <-ch; late.c != nil {
				late.c.Close()
			}
		}()
		return nil, &Error{Op: "connect " + uri, Sentinel: ErrUnreachable, Message: fmt.Sprintf("no answer from %s: %v", uri, ctx.Err())}
	}
	if r.err != nil {
		e := wrap("connect "+uri, r.err).(*Error)
		if e.Sentinel == ErrFailed || e.Sentinel == ErrInvalidState {
			e.Sentinel = ErrUnreachable
		}
		return nil, e
	}
	if err := r.c.SetKeepAlive(keepaliveIntervalSec, keepaliveCount); err != nil {
		r.c.Close()
		return nil, wrap("keepalive "+uri, err)
	}
	h := &host{uri: uri, c: r.c}
	if err := r.c.RegisterCloseCallback(h.onClose); err != nil {
		r.c.Close()
		return nil, wrap("close callback "+uri, err)
	}
	return h, nil
}

type host struct {
	uri string
	c   *libvirt.Connect

	mu        sync.Mutex
	subs      map[*subscriber]struct{}
	callbacks []int
	closed    bool
}

func (h *host) URI() string { return h.uri }

func (h *host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for _, id := range h.callbacks {
		_ = h.c.DomainEventDeregister(id)
	}
	h.callbacks = nil
	subs := h.subs
	h.subs = nil
	h.mu.Unlock()
	for s := range subs {
		s.close()
	}
	_ = h.c.UnregisterCloseCallback()
	_, err := h.c.Close()
	return wrap("close "+h.uri, err)
}

func (h *host) Identity() (Identity, error) {
	capsXML, err := h.c.GetCapabilities()
	if err != nil {
		return Identity{}, wrap("capabilities of "+h.uri, err)
	}
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return Identity{}, &Error{Op: "capabilities of " + h.uri, Sentinel: ErrFailed, Message: err.Error()}
	}
	name, err := h.c.GetHostname()
	if err != nil {
		return Identity{}, wrap("hostname of "+h.uri, err)
	}
	return Identity{Hostname: name, UUID: caps.Host.UUID, Arch: caps.Host.CPU.Arch}, nil
}

func (h *host) Capacity() (Capacity, error) {
	ni, err := h.c.GetNodeInfo()
	if err != nil {
		return Capacity{}, wrap("node info of "+h.uri, err)
	}
	free, err := h.c.GetFreeMemory()
	if err != nil {
		return Capacity{}, wrap("free memory of "+h.uri, err)
	}
	lv, _ := h.c.GetLibVersion()
	hv, _ := h.c.GetVersion()
	return Capacity{
		CPUs:            int(ni.Cpus),
		MemoryBytes:     ni.Memory * 1024,
		FreeMemoryBytes: free,
		LibvirtVersion:  version(lv),
		QEMUVersion:     version(hv),
	}, nil
}

func version(v uint32) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", v/1000000, (v/1000)%1000, v%1000)
}

func (h *host) ListDomains() ([]DomainInfo, error) {
	doms, err := h.c.ListAllDomains(0)
	if err != nil {
		return nil, wrap("list domains on "+h.uri, err)
	}
	return describeAll(doms, func(d *libvirt.Domain) (DomainInfo, error) { return (&domain{h: h, d: d}).Info() }, (*libvirt.Domain).Free), nil
}

func (h *host) LookupDomain(nameOrUUID string) (Domain, error) {
	var (
		d   *libvirt.Domain
		err error
	)
	if _, perr := uuid.Parse(nameOrUUID); perr == nil {
		d, err = h.c.LookupDomainByUUIDString(nameOrUUID)
	}
	if d == nil {
		d, err = h.c.LookupDomainByName(nameOrUUID)
	}
	if err != nil {
		return nil, wrap(fmt.Sprintf("domain %q on %s", nameOrUUID, h.uri), err)
	}
	return newDomain(h, d), nil
}

func (h *host) DefineXML(xml string) (Domain, error) {
	d, err := h.c.DomainDefineXML(xml)
	if err != nil {
		return nil, wrap("define domain on "+h.uri, err)
	}
	return newDomain(h, d), nil
}

func (h *host) CompareCPU(spec DomainSpec) error {
	if spec.CPUXML == "" {
		return nil // the hypervisor's default model, available everywhere it runs
	}
	res, err := h.c.CompareHypervisorCPU("", spec.Arch, spec.Machine, spec.Type, spec.CPUXML, libvirt.CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
	if err != nil {
		return wrap("compare guest CPU on "+h.uri, err)
	}
	if res == libvirt.CPU_COMPARE_INCOMPATIBLE {
		return &Error{Op: "compare guest CPU on " + h.uri, Sentinel: ErrCPUIncompatible, Message: "the host CPU cannot run the guest's CPU model"}
	}
	return nil
}

type domain struct {
	h *host
	d *libvirt.Domain
}

func newDomain(h *host, d *libvirt.Domain) *domain {
	return freeWithWrapper(&domain{h: h, d: d}, d.Free)
}

func (d *domain) name() string { return nameOf(d.d) }

func (d *domain) op(what string) string {
	return fmt.Sprintf("%s %s on %s", what, d.name(), d.h.uri)
}

func (d *domain) Info() (DomainInfo, error) {
	name, err := d.d.GetName()
	if err != nil {
		return DomainInfo{}, wrap("domain name on "+d.h.uri, err)
	}
	id, err := d.d.GetUUIDString()
	if err != nil {
		return DomainInfo{}, wrap("domain uuid on "+d.h.uri, err)
	}
	st, reason, err := d.d.GetState()
	if err != nil {
		return DomainInfo{}, wrap(d.op("state of"), err)
	}
	info, err := d.d.GetInfo()
	if err != nil {
		return DomainInfo{}, wrap(d.op("info of"), err)
	}
	pers, err := d.d.IsPersistent()
	if err != nil {
		return DomainInfo{}, wrap(d.op("persistence of"), err)
	}
	return DomainInfo{
		Name: name, UUID: id, State: stateNames[st], Reason: stateReason(st, reason),
		MemoryBytes: info.MaxMem * 1024, VCPUs: int(info.NrVirtCpu), Persistent: pers,
	}, nil
}

func (d *domain) XML(migratable bool) (string, error) {
	var flags libvirt.DomainXMLFlags
	if migratable {
		flags = libvirt.DOMAIN_XML_MIGRATABLE
	}
	x, err := d.d.GetXMLDesc(flags)
	return x, wrap(d.op("XML of"), err)
}

func (d *domain) Spec() (DomainSpec, error) {
	x, err := d.XML(true)
	if err != nil {
		return DomainSpec{}, err
	}
	return ParseSpec(x)
}

// ParseSpec reads the parts of a domain definition ferry's checks need.
func ParseSpec(xml string) (DomainSpec, error) {
	var dx libvirtxml.Domain
	if err := dx.Unmarshal(xml); err != nil {
		return DomainSpec{}, &Error{Op: "parse domain XML", Sentinel: ErrFailed, Message: err.Error()}
	}
	s := DomainSpec{Name: dx.Name, UUID: dx.UUID, Type: dx.Type}
	if dx.Memory != nil {
		s.MemoryBytes = memBytes(dx.Memory.Value, dx.Memory.Unit)
	}
	if dx.VCPU != nil {
		s.VCPUs = int(dx.VCPU.Value)
	}
	if dx.OS != nil {
		if dx.OS.Type != nil {
			s.Arch, s.Machine = dx.OS.Type.Arch, dx.OS.Type.Machine
		}
		if dx.OS.NVRam != nil {
			s.NVRAM = dx.OS.NVRam.NVRam
		}
	}
	if dx.CPU != nil && dx.CPU.Model != nil && dx.CPU.Model.Value != "" && dx.CPU.Mode != "host-passthrough" {
		if cx, err := dx.CPU.Marshal(); err == nil {
			s.CPUXML = cx
		}
	}
	if dx.Devices != nil {
		for _, dk := range dx.Devices.Disks {
			disk := Disk{Device: dk.Device, ReadOnly: dk.ReadOnly != nil, Shared: dk.Shareable != nil}
			if disk.Device == "" {
				disk.Device = "disk"
			}
			if dk.Target != nil {
				disk.Target = dk.Target.Dev
			}
			if dk.Source != nil {
				switch {
				case dk.Source.File != nil:
					disk.Source = dk.Source.File.File
				case dk.Source.Block != nil:
					disk.Source = dk.Source.Block.Dev
				}
			}
			s.Disks = append(s.Disks, disk)
		}
	}
	return s, nil
}

func memBytes(v uint, unit string) uint64 {
	mult := map[string]uint64{
		"b": 1, "bytes": 1, "KB": 1000, "k": 1024, "KiB": 1024, "": 1024,
		"MB": 1000 * 1000, "M": 1 << 20, "MiB": 1 << 20,
		"GB": 1000 * 1000 * 1000, "G": 1 << 30, "GiB": 1 << 30,
		"TB": 1000 * 1000 * 1000 * 1000, "T": 1 << 40, "TiB": 1 << 40,
	}[unit]
	if mult == 0 {
		mult = 1024
	}
	return uint64(v) * mult
}

// abortRetryMS is how often a refused abort of a cancelled migration is
// asked again.
const abortRetryMS = 100

func (d *domain) Migrate(ctx context.Context, p MigrateParams) error {
	params := &libvirt.DomainMigrateParameters{}
	if p.DataURI != "" {
		params.URISet, params.URI = true, p.DataURI
	}
	if p.BandwidthMiBps > 0 {
		params.BandwidthSet, params.Bandwidth = true, p.BandwidthMiBps
	}
	flags := libvirt.MIGRATE_LIVE | libvirt.MIGRATE_PEER2PEER | libvirt.MIGRATE_PERSIST_DEST | libvirt.MIGRATE_ABORT_ON_ERROR
	if p.CopyStorage {
		flags |= libvirt.MIGRATE_NON_SHARED_DISK
	}
	if p.Postcopy {
		flags |= libvirt.MIGRATE_POSTCOPY
	}
	if p.TLS {
		flags |= libvirt.MIGRATE_TLS
		if p.TLSDestination != "" {
			params.TLSDestinationSet, params.TLSDestination = true, p.TLSDestination
		}
	}
	if p.AutoConverge {
		flags |= libvirt.MIGRATE_AUTO_CONVERGE
		if p.AutoConvergeInitial > 0 {
			params.AutoConvergeInitialSet, params.AutoConvergeInitial = true, p.AutoConvergeInitial
		}
		if p.AutoConvergeIncrement > 0 {
			params.AutoConvergeIncrementSet, params.AutoConvergeIncrement = true, p.AutoConvergeIncrement
		}
	}
	op := d.op("migrate") + " to " + p.DestURI
	if ctx.Err() != nil {
		// Cancelled before the job started (an API DELETE right after the
		// reservation, Ctrl-C during planning): do not start it.
		return &Error{Op: op, Sentinel: ErrAborted, Message: fmt.Sprintf("aborted before the job started (%v)", context.Cause(ctx))}
	}
	done := make(chan error, 1)
	go func() { done <- d.d.MigrateToURI3(p.DestURI, params, flags) }()
	select {
	case err := <-done:
		return wrap(op, err)
	case <-ctx.Done():
	}
	// Cancelled: abort the job and wait for libvirt to unwind it, so the caller
	// never proceeds while a migration is still in flight. Just after the call
	// libvirt may not have registered the job yet and refuses the abort
	// ("no job is active"), which would let the migration run to the end:
	// ask again until an abort is accepted or the call returns.
	abortErr := d.d.AbortJob()
	retry := time.NewTicker(abortRetryMS * time.Millisecond)
	defer retry.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-retry.C:
			if abortErr != nil {
				abortErr = d.d.AbortJob()
			}
		}
	}
	if err == nil {
		return nil // it completed before the abort took effect
	}
	e := wrap(op, err).(*Error)
	if abortErr == nil {
		e.Sentinel = ErrAborted
		e.Message = fmt.Sprintf("aborted (%v): %s", context.Cause(ctx), e.Message)
	}
	return e
}

func (d *domain) JobStats(completed bool) (JobStats, error) {
	var flags libvirt.DomainGetJobStatsFlags
	if completed {
		flags = libvirt.DOMAIN_JOB_STATS_COMPLETED | libvirt.DOMAIN_JOB_STATS_KEEP_COMPLETED
	}
	ji, err := d.d.GetJobStats(flags)
	if err != nil {
		return JobStats{}, wrap(d.op("job stats of"), err)
	}
	return convertJob(ji), nil
}

func convertJob(ji *libvirt.DomainJobInfo) JobStats {
	return JobStats{
		Type:             jobTypeNames[ji.Type],
		Elapsed:          time.Duration(ji.TimeElapsed) * time.Millisecond,
		DataTotal:        ji.DataTotal,
		DataProcessed:    ji.DataProcessed,
		DataRemaining:    ji.DataRemaining,
		MemTotal:         ji.MemTotal,
		MemProcessed:     ji.MemProcessed,
		MemRemaining:     ji.MemRemaining,
		MemBytesPerSec:   ji.MemBps,
		DirtyPagesPerSec: ji.MemDirtyRate,
		PageSize:         ji.MemPageSize,
		Iteration:        int(ji.MemIteration),
		Throttle:         ji.AutoConvergeThrottle,
		PostcopyRequests: ji.MemPostcopyReqs,
		Downtime:         time.Duration(ji.Downtime) * time.Millisecond,
		DowntimeSet:      ji.DowntimeSet,
		ErrorMessage:     ji.ErrorMessage,
	}
}

func (d *domain) AbortJob() error { return wrap(d.op("abort job of"), d.d.AbortJob()) }

func (d *domain) SetMaxDowntime(dt time.Duration) error {
	return wrap(d.op("set max downtime of"), d.d.MigrateSetMaxDowntime(uint64(dt.Milliseconds()), 0))
}

func (d *domain) SetMaxSpeed(mibps uint64) error {
	return wrap(d.op("set max speed of"), d.d.MigrateSetMaxSpeed(mibps, 0))
}

func (d *domain) StartPostcopy() error {
	return wrap(d.op("start post-copy of"), d.d.MigrateStartPostCopy(0))
}

func (d *domain) Suspend() error { return wrap(d.op("suspend"), d.d.Suspend()) }
func (d *domain) Resume() error  { return wrap(d.op("resume"), d.d.Resume()) }
func (d *domain) Start() error   { return wrap(d.op("start"), d.d.Create()) }
func (d *domain) Destroy() error { return wrap(d.op("destroy"), d.d.Destroy()) }

func (d *domain) Undefine(keepNVRAM bool) error {
	flags := libvirt.DOMAIN_UNDEFINE_NVRAM
	if keepNVRAM {
		flags = libvirt.DOMAIN_UNDEFINE_KEEP_NVRAM
	}
	err := d.d.UndefineFlags(flags)
	if err != nil && strings.Contains(err.Error(), "nvram") && !keepNVRAM {
		err = d.d.UndefineFlags(0)
	}
	return wrap(d.op("undefine"), err)
}
