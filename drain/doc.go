// Package drain empties a host: it marks it in maintenance, places every VM
// on it (the same pre-flight as any move, plus limits and spread), and runs
// the moves through the orchestrator within limits (parallel overall, per
// destination, across ferry processes), retrying with backoff, cancellable
// from anywhere, re-runnable. Like kubectl's pkg/drain beside its command,
// it is a library: progress goes to a callback, per-VM failures come back
// as error values (errors.Join), and it never prints or picks exit codes.
//
// Its report is persisted in the journal after every change, so other
// processes (ferry serve, ferry drain --status / --cancel) follow it.
package drain
