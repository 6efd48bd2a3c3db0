// Package inventory reads ferry's YAML inventory: the hosts ferry knows by
// name (libvirt URI, migration address, labels, memory kept for the host,
// link bandwidth), the per-host limits of concurrent moves, the hooks
// directory and the webhooks. It also owns the rule for names users give
// (hosts and VMs).
//
// It parses and resolves; it never connects to a host.
package inventory
