// Package placement judges destinations. Judge is the one pre-flight of a
// destination: live and cold moves, `ferry place` and drains gather the same
// facts about a host (a Candidate) and this pure function decides whether
// the VM may go there, check by check. Place ranks every candidate of a VM
// with it and explains each verdict.
//
// It decides only: it touches no host and no database, and takes every fact,
// including the time-dependent ones (moves in flight, reservations), from
// its caller.
package placement
