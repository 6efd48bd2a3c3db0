// Package coldmove moves a stopped VM between libvirt hosts over libvirt
// connections alone: its disks (and their backing chains), NVRAM, log files
// and persistent definition (DESIGN.md §4).
//
// It owns the artifact plan, the sparse-aware stream copy with a checksum
// verified on the destination, the rewrite of the domain XML for the
// destination's storage, and the named steps (each with Do and Undo) that run
// the move and roll it back in reverse on failure. It never imports
// orchestrator or cobra: the caller persists progress through Recorder and
// decides about journals, reservations and output. Everything it asks of
// libvirt goes through package virt.
package coldmove
