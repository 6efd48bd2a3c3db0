// Package orchestrator moves VMs: one move core (Controller.Migrate) whose
// kind, live or cold, decides its plan and run, around a common pre-flight
// (the VM found, claimed in the journal, the hooks' consent, the
// destination judged by placement.Judge). A live move runs the six-stage
// transaction of DESIGN.md §2 with pre-copy control (package precopy) and
// post-copy resume; a cold move copies a stopped VM's files (package
// coldmove). After a failure, at commitment and in Recover, convergence
// (converge.go: observe both hosts, decide with a pure function, apply)
// leaves exactly one copy of the VM running.
//
// It owns the moves and their error kinds (errors.go). It does not store
// (package journal), place (placement), drain (drain), read the inventory
// (inventory) or call hooks (hooks); it never prints for humans and never
// chooses exit codes: it reports progress through callbacks and returns
// errors wrapping its sentinels. It reaches libvirt only through package virt.
package orchestrator
