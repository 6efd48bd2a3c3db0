// Package virt is ferry's only seam to libvirt (and, later, QEMU's monitor).
//
// It translates libvirt calls, errors and events into plain Go types and small
// interfaces (Host, Domain) that the rest of ferry consumes and that
// virt/virttest fakes for unit tests. It holds no policy: which checks to run,
// when to abort or how to converge are decided by orchestrator and precopy.
// Errors are wrapped around the sentinels in errors.go so callers can write
// errors.Is(err, virt.ErrNotFound) without knowing libvirt's error codes.
package virt
