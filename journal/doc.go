// Package journal is ferry's one store: the state database every ferry
// process sharing a machine (or, through the owner leases, several
// machines) reads and writes. It holds the migration journal (one row per
// move, its stage times and outcome), the reservation and move-slot
// ledgers, the owner leases, drains, maintenance marks and the artifacts of
// cold moves. Open creates or upgrades every table through numbered schema
// migrations (table schema_version); the SLA event log (package sla) lives
// in the same database.
//
// Each check that must hold across processes (one unfinished move per VM,
// a reservation that fits, a move slot within its limits, one drain per
// host) is one write transaction here. Queries are written once, with ?
// placeholders, and pass through the engine's dialect, so another engine
// (PostgreSQL) needs a dialect and its schema steps, not new queries.
//
// It stores and answers; it never reaches a host and never decides what a
// move does. Every database failure wraps ErrDatabase.
package journal
