// Package hooks tells the world outside ferry what a move is doing: at each
// stage boundary an event goes to the executables of a hooks directory (run
// directly, never through a shell, the payload as JSON on stdin and as
// FERRY_* variables) and to the webhooks subscribed to it (an HTTP POST of the
// same JSON).
//
// It owns the events, the payload, the ownership rules a hooks directory
// must meet, and the calls themselves. It knows nothing of migrations: the
// orchestrator builds the payload and decides what a failure means (only
// pre-migration can veto a move).
package hooks
