package virt

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"libvirt.org/go/libvirt"
)

// monitor adapts libvirt's QEMU monitor passthrough to go-qemu's qmp.Monitor,
// so QMP commands reach QEMU through the libvirt connection ferry already has
// (no socket access on the host needed). go-qemu's generated raw API predates
// calc-dirty-rate, so replies are decoded into ferry's own structs.
type monitor struct{ d *libvirt.Domain }

var _ qmp.Monitor = monitor{}

func (monitor) Connect() error    { return nil }
func (monitor) Disconnect() error { return nil }

func (m monitor) Run(cmd []byte) ([]byte, error) {
	out, err := m.d.QemuMonitorCommand(string(cmd), libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	if err != nil {
		return nil, wrap("QMP", err)
	}
	return []byte(out), nil
}

func (monitor) Events(context.Context) (<-chan qmp.Event, error) {
	return nil, &Error{Op: "QMP events", Sentinel: ErrNoSupport, Message: "events come from libvirt, not the passthrough monitor"}
}

// runQMP sends one command and decodes its "return" member into out.
func runQMP(mon qmp.Monitor, execute string, args any, out any) error {
	cmd, err := json.Marshal(qmp.Command{Execute: execute, Args: args})
	if err != nil {
		return err
	}
	raw, err := mon.Run(cmd)
	if err != nil {
		return err
	}
	var reply struct {
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		return &Error{Op: "QMP " + execute, Sentinel: ErrFailed, Message: "undecodable reply: " + err.Error()}
	}
	if reply.Error != nil {
		return &Error{Op: "QMP " + execute, Sentinel: ErrFailed, Message: reply.Error.Class + ": " + reply.Error.Desc}
	}
	if out != nil && len(reply.Return) > 0 {
		return json.Unmarshal(reply.Return, out)
	}
	return nil
}

// dirtyRateReply is QMP query-dirty-rate's answer (QEMU ≥ 5.2).
type dirtyRateReply struct {
	Status    string `json:"status"`     // unstarted, measuring, measured
	DirtyRate *int64 `json:"dirty-rate"` // MiB/s
	CalcTime  int64  `json:"calc-time"`
	StartTime int64  `json:"start-time"`
}

// MeasureDirtyRate asks QEMU how fast the guest dirties memory, sampling for
// period (at least 100 ms; whole seconds on QEMU < 8.2). It returns bytes per second.
func (d *domain) MeasureDirtyRate(ctx context.Context, period time.Duration) (uint64, error) {
	mon := monitor{d: d.d}
	// QEMU ≥ 8.2 measures in milliseconds; older ones only in whole seconds.
	ms := max(period.Milliseconds(), 100)
	// page-sampling (the mode that works under TCG too: dirty-bitmap reads 0
	// there) with QEMU's default 512 pages per GiB read a guest writing 78 MiB/s
	// as 32-56 MiB/s in the lab; 4096 pages read 70-83.
	args := map[string]any{"calc-time": ms, "calc-time-unit": "millisecond", "sample-pages": 4096}
	if err := runQMP(mon, "calc-dirty-rate", args, nil); err != nil {
		secs := max((ms+999)/1000, 1)
		if err := runQMP(mon, "calc-dirty-rate", map[string]any{"calc-time": secs}, nil); err != nil {
			return 0, err
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var r dirtyRateReply
		if err := runQMP(mon, "query-dirty-rate", nil, &r); err != nil {
			return 0, err
		}
		if r.Status == "measured" && r.DirtyRate != nil {
			if *r.DirtyRate < 0 {
				return 0, nil
			}
			return uint64(*r.DirtyRate) << 20, nil
		}
		select {
		case <-ctx.Done():
			return 0, &Error{Op: d.op("measure dirty rate of"), Sentinel: ErrTimeout, Message: fmt.Sprintf("no measurement: %v", ctx.Err())}
		case <-tick.C:
		}
	}
}

// SetThrottle sets auto-converge's CPU throttle (QMP migrate-set-parameters):
// the first step, the increment, and the trigger, i.e. the share of the bytes
// sent in a sync period that dirtying must exceed twice running before QEMU
// throttles (its default is 50; at 100 it throttles only when the guest
// dirties faster than the link sends). It works mid-job, but only when the job
// was started with auto-converge: QEMU's capabilities are fixed per job.
func (d *domain) SetThrottle(initialPct, incrementPct, triggerPct int) error {
	return runQMP(monitor{d: d.d}, "migrate-set-parameters", map[string]any{
		"cpu-throttle-initial": initialPct, "cpu-throttle-increment": incrementPct,
		"throttle-trigger-threshold": triggerPct}, nil)
}
