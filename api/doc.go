// Package api is ferry's HTTP API, served by `ferry serve`: start, inspect
// and cancel migrations and drains, read SLA reports, scrape metrics.
//
// It owns the HTTP layer only: decoding and validating requests, bearer-token
// auth, mapping orchestrator errors to status codes, and the bookkeeping of
// the moves this server started (their contexts, last progress, dedup by VM).
// Moving VMs is the orchestrator's job and the journal is the record; the API
// never touches libvirt itself and never prints for humans.
//
// Every response is JSON; errors are {"error": "...", "code": "..."} with the
// status codes listed in errors.go.
package api
