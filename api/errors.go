package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

// Error is the body of every error response.
type Error struct {
	Message string `json:"error"`
	Code    string `json:"code"`
	// ID names the journal row a refused migration left (GET it for the checks).
	ID string `json:"id,omitempty"`
	// OwnerPID is the ferry process that owns the migration or drain, when
	// the request conflicts with one.
	OwnerPID int `json:"owner_pid,omitempty"`
	// RequestID names the request in the server's log (internal errors).
	RequestID string `json:"request_id,omitempty"`

	status int
}

func (e *Error) Error() string { return e.Message }

func apiErr(status int, code, msg string) *Error {
	return &Error{status: status, Code: code, Message: msg}
}

// Status codes of refusals, from the orchestrator's sentinels:
//
//	400 invalid_request        malformed or contradictory request (bad names, options, JSON)
//	401 unauthorized           no or wrong bearer token
//	404 unknown_vm             the VM is on no inventory host
//	404 unknown_host           not an inventory host name
//	404 unknown_migration      no journal row with that id
//	404 unknown_drain          no drain with that id
//	409 busy                   the VM (or host) is being moved (drained) already and this server cannot answer with that move
//	409 same_host              the VM already runs on the destination
//	409 not_running            live migration of a VM that does not run
//	409 name_clash             the destination defines a domain with the VM's name or UUID
//	409 limit                  a host's limit of concurrent moves is reached; try later
//	409 vetoed                 a pre-migration hook or webhook said no
//	409 refused                another refusal
//	409 finished               cancelling a migration or drain that has ended
//	409 other_process          cancelling a migration another ferry process runs
//	409 past_commitment        cancelling a migration that can no longer roll back
//	413 body_too_large         request body over the limit
//	415 unsupported_media_type a body that is not application/json
//	422 insufficient_memory    no room on the destination's memory
//	422 insufficient_cpus      the destination has fewer CPUs than the VM vCPUs
//	422 migration_tls          migration TLS is required but a host lacks its certificates
//	422 insufficient_storage   no room in the destination pool (cold)
//	422 cpu_incompatible       the destination cannot run the guest's CPU
//	422 no_placement           "to": "auto" found no host that fits
//	502 host_unreachable       a libvirt host did not answer
//	503 shutting_down          the server is stopping and starts nothing new
//	500 state_database         the state database failed: what was asked may or may not be done
//	500 internal               anything else (the message says what)
//
// 422 rather than 409 for capacity: the request is fine and nothing
// conflicts with it, the destination just cannot take it.
func statusOf(err error) (int, string) {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.Code
	case errors.Is(err, orchestrator.ErrUnknownVM):
		return http.StatusNotFound, "unknown_vm"
	case errors.Is(err, orchestrator.ErrUnknownHost):
		return http.StatusNotFound, "unknown_host"
	case errors.Is(err, journal.ErrNoRecord):
		return http.StatusNotFound, "unknown_migration"
	case errors.Is(err, drain.ErrUnknown):
		return http.StatusNotFound, "unknown_drain"
	case errors.Is(err, sla.ErrNoEntry):
		return http.StatusNotFound, "not_in_sla_log"
	case errors.Is(err, orchestrator.ErrBusy):
		return http.StatusConflict, "busy"
	case errors.Is(err, orchestrator.ErrSameHost):
		return http.StatusConflict, "same_host"
	case errors.Is(err, orchestrator.ErrNotRunning):
		return http.StatusConflict, "not_running"
	case errors.Is(err, orchestrator.ErrNameClash):
		return http.StatusConflict, "name_clash"
	case errors.Is(err, orchestrator.ErrLimit):
		return http.StatusConflict, "limit"
	case errors.Is(err, orchestrator.ErrVetoed):
		return http.StatusConflict, "vetoed"
	case errors.Is(err, orchestrator.ErrInsufficientMemory):
		return http.StatusUnprocessableEntity, "insufficient_memory"
	case errors.Is(err, orchestrator.ErrInsufficientStorage):
		return http.StatusUnprocessableEntity, "insufficient_storage"
	case errors.Is(err, orchestrator.ErrMigrationTLS):
		return http.StatusUnprocessableEntity, "migration_tls"
	case errors.Is(err, orchestrator.ErrTooFewCPUs):
		return http.StatusUnprocessableEntity, "insufficient_cpus"
	case errors.Is(err, orchestrator.ErrCPUIncompatible):
		return http.StatusUnprocessableEntity, "cpu_incompatible"
	case errors.Is(err, orchestrator.ErrNoPlacement):
		return http.StatusUnprocessableEntity, "no_placement"
	case errors.Is(err, orchestrator.ErrUnreachable):
		return http.StatusBadGateway, "host_unreachable"
	// Last among refusals: Controller.Refuse wraps every kind in it.
	case errors.Is(err, orchestrator.ErrInvalidRequest):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, orchestrator.ErrRefused):
		return http.StatusConflict, "refused"
	case errors.Is(err, journal.ErrAmbiguousID):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, journal.ErrDatabase):
		return http.StatusInternalServerError, "state_database"
	}
	return http.StatusInternalServerError, "internal"
}

// toError turns any error into the response body and status.
func toError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	status, code := statusOf(err)
	return &Error{status: status, Code: code, Message: err.Error()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // messages quote <token> and friends; this is not HTML
	_ = enc.Encode(v)
}

// writeError answers with err as JSON and notes it for the request log.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toError(err)
	note(r, "error", e.Message)
	writeJSON(w, e.status, e)
}
