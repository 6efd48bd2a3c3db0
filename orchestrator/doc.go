// Package orchestrator is ferry's migration controller: it runs a live
// migration as the six-stage transaction of DESIGN.md §2 (pre-migration,
// reservation, iterative pre-copy, stop-and-copy, commitment, activation),
// keeps the journal and the reservation ledger in the state database, reads
// the host inventory, runs hooks, and recovers what a crash interrupted.
//
// It never prints for humans and never chooses exit codes: it reports
// progress through callbacks and returns errors wrapping the sentinels in
// errors.go. It reaches libvirt only through package virt.
package orchestrator
