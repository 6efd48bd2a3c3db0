// Package precopy decides how a live migration's memory copy converges.
//
// QEMU copies the pages; this package owns the decisions around that copy:
//
//   - the convergence model (Predict): from memory M, dirty rate D, bandwidth B,
//     downtime limit L and, when known, the writable working set W, how many
//     rounds, how long, how much data and how long a pause plain pre-copy needs;
//   - the plan (Policy.Plan): which strategy to start with (plain pre-copy,
//     pre-copy then post-copy, auto-converge, or "will not converge") and the
//     job settings that go with it (Job);
//   - the policy (Step): a pure function fed with job statistics every few hundred
//     milliseconds that returns the actions to apply (raise the downtime limit,
//     raise the bandwidth cap, throttle the guest, switch to post-copy, suspend,
//     abort), with stall detection and the completion deadline;
//   - a simulator of QEMU's pre-copy (Sim, Simulate, Run) that drives the tests
//     and lets `ferry migrate --plan` show what the policy is expected to do.
//
// It must not do I/O: no libvirt, no QMP, no clock, no logging, no goroutines.
// Callers pass the time in and apply the returned actions themselves; only the
// standard library is imported, so the orchestrator and the CLI can use it and
// tests need no daemon.
//
// Units: byte counts are int64 bytes and rates int64 bytes per second, with the
// unit in the field name (MemoryBytes, BandwidthBytesPerSec) because the type
// does not carry it; time.Duration is used inside Go, and whole milliseconds
// (fields ending in MS) wherever a value is serialised for display or JSON.
package precopy

// Byte sizes, for readable constants and tests.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)
