package coldmove

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// usage is what virt.ObserveUsage would report for a host: the storage's
// pools and volumes, the fake host's domains.
func usage(s *virttest.Storage, h *fakeHost, backing map[string]string) *virt.HostUsage {
	u := s.Usage(backing)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.domains {
		u.Domains = append(u.Domains, virt.DomainFiles{Name: d.info.Name, UUID: d.info.UUID, State: d.info.State,
			Persistent: d.info.Persistent, Files: virt.DomainFileRefs(d.xml, nil)})
	}
	return u
}

// failUploadAfterFirstChunk makes an upload of path fail once it has
// received data, as a connection reset halfway through a copy would.
func failUploadAfterFirstChunk(path string) func(virttest.StorageCall) error {
	return func(c virttest.StorageCall) error {
		if c.Op == virttest.OpWrite && c.Path == path && c.Offset > 0 {
			return &virt.Error{Op: "upload " + path, Sentinel: virt.ErrUnreachable, Message: "connection reset"}
		}
		return nil
	}
}

func notFound(what string) error {
	return &virt.Error{Op: what, Sentinel: virt.ErrNotFound, Message: what + " not found"}
}

// fakeHost is the domain side of a host: only what a move calls.
type fakeHost struct {
	virt.Host
	mu      sync.Mutex
	domains map[string]*fakeDomain // by UUID
	subs    []chan virt.Event
}

func (h *fakeHost) Subscribe(ctx context.Context) (<-chan virt.Event, error) {
	ch := make(chan virt.Event, 16)
	h.mu.Lock()
	h.subs = append(h.subs, ch)
	h.mu.Unlock()
	go func() {
		<-ctx.Done()
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, c := range h.subs {
			if c == ch {
				h.subs = append(h.subs[:i], h.subs[i+1:]...)
				close(ch)
				break
			}
		}
	}()
	return ch, nil
}

// emit delivers a lifecycle event of a domain to every subscriber.
func (h *fakeHost) emit(uuid, lifecycle string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.subs {
		c <- virt.Event{Kind: virt.EventLifecycle, UUID: uuid, Lifecycle: lifecycle}
	}
}

func newFakeHost() *fakeHost { return &fakeHost{domains: map[string]*fakeDomain{}} }

func (h *fakeHost) LookupDomain(key string) (virt.Domain, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.domains {
		if d.info.UUID == key || d.info.Name == key {
			return d, nil
		}
	}
	return nil, notFound("domain " + key)
}

func (h *fakeHost) DefineXML(x string) (virt.Domain, error) {
	spec, err := virt.ParseSpec(x)
	if err != nil {
		return nil, err
	}
	d := &fakeDomain{h: h, xml: x, info: virt.DomainInfo{Name: spec.Name, UUID: spec.UUID, State: virt.StateShutoff, Persistent: true}}
	h.mu.Lock()
	h.domains[spec.UUID] = d
	h.mu.Unlock()
	return d, nil
}

type fakeDomain struct {
	virt.Domain
	h     *fakeHost
	xml   string
	info  virt.DomainInfo
	calls []string
	// startedBeforeUndefine: someone starts the VM between ferry's last
	// check and its undefine, so the undefine leaves a transient domain.
	startedBeforeUndefine bool
}

func (d *fakeDomain) Info() (virt.DomainInfo, error) { return d.info, nil }
func (d *fakeDomain) XML(bool) (string, error)       { return d.xml, nil }
func (d *fakeDomain) Start() error {
	d.calls = append(d.calls, "start")
	d.info.State = virt.StateRunning
	return nil
}
func (d *fakeDomain) Destroy() error {
	d.calls = append(d.calls, "destroy")
	d.info.State = virt.StateShutoff
	return nil
}
func (d *fakeDomain) Shutdown() error { d.calls = append(d.calls, "shutdown"); return nil }
func (d *fakeDomain) Undefine(keepNVRAM bool) error {
	d.calls = append(d.calls, fmt.Sprintf("undefine(keepNVRAM=%v)", keepNVRAM))
	if d.startedBeforeUndefine {
		d.info.State, d.info.Persistent = virt.StateRunning, false
		return nil
	}
	d.h.mu.Lock()
	delete(d.h.domains, d.info.UUID)
	d.h.mu.Unlock()
	return nil
}

const testUUID = "6f1c3e2a-1111-4222-8333-444455556666"

func testXML(name string) string {
	return strings.NewReplacer("NAME", name, "UUID", testUUID).Replace(`<domain type='qemu'>
  <name>NAME</name>
  <uuid>UUID</uuid>
  <memory unit='MiB'>128</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/NAME_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/NAME-vda.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/vms/NAME-vdb.img'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
  </devices>
</domain>`)
}

// pattern returns n bytes with data at the given offsets (1 KiB each) and zeros elsewhere.
func pattern(n int, seed byte, offsets ...int) []byte {
	b := make([]byte, n)
	for _, off := range offsets {
		for i := 0; i < 1024 && off+i < n; i++ {
			b[off+i] = seed + byte(i%7) + 1
		}
	}
	return b
}
