package sla

// lifecycleMapping is one row of the libvirt lifecycle → event kind table.
type lifecycleMapping struct {
	kind     Kind
	postcopy bool
}

// lifecycleTable maps libvirt domain lifecycle events, in the words virt uses
// ("stopped", "crashed"; see virt.Event.Lifecycle and Detail), to SLA event
// kinds. A pair that is absent, or maps to "", emits nothing: it is either
// part of a migration (whose pause the orchestrator reports with its measured
// downtime) or a transition that changes no availability. A detail of "*"
// matches any detail of that event.
//
// Failures: a guest crash (crashed/*, stopped/crashed), the emulator failing
// (stopped/failed: libvirt's word for a QEMU that died without shutting down,
// e.g. killed by a signal or by the OOM killer), a failed post-copy and an
// I/O-error, watchdog or API-error pause. stopped/destroyed is NOT a failure:
// libvirt reports it only when someone called virDomainDestroy (virsh
// destroy, a cloud's force-stop), which is the owner powering the VM off, so
// it is owner-stopped time, excluded from eligible time like a shutdown. A
// destroy that ferry itself does during a migration carries the migration's
// correlation id and is no stop either.
var lifecycleTable = map[[2]string]lifecycleMapping{
	{"started", "booted"}:            {kind: VMStarted},
	{"started", "restored"}:          {kind: VMStarted},
	{"started", "from-snapshot"}:     {kind: VMStarted},
	{"started", "wakeup"}:            {kind: VMStarted},
	{"started", "migrated"}:          {kind: VMReachable}, // arrived on this host
	{"started", "recreated"}:         {kind: VMReachable},
	{"resumed", "unpaused"}:          {kind: VMStarted}, // owner resumed
	{"resumed", "migrated"}:          {kind: VMReachable},
	{"resumed", "postcopy"}:          {kind: VMReachable},
	{"resumed", "postcopy-failed"}:   {kind: VMFailure, postcopy: true},
	{"suspended", "paused"}:          {kind: VMStopped}, // owner paused
	{"suspended", "guest-shutdown"}:  {kind: VMStopped},
	{"suspended", "ioerror"}:         {kind: VMFailure},
	{"suspended", "watchdog"}:        {kind: VMFailure},
	{"suspended", "api-error"}:       {kind: VMFailure},
	{"suspended", "postcopy-failed"}: {kind: VMFailure, postcopy: true},
	{"suspended", "migrated"}:        {}, // switchover pause: charged from downtime_ms
	{"suspended", "postcopy"}:        {}, // switchover into post-copy
	{"suspended", "restored"}:        {},
	{"stopped", "shutdown"}:          {kind: VMStopped},
	{"stopped", "destroyed"}:         {kind: VMStopped},
	{"stopped", "saved"}:             {kind: VMStopped},
	{"stopped", "crashed"}:           {kind: VMFailure},
	{"stopped", "failed"}:            {kind: VMFailure},
	{"stopped", "migrated"}:          {}, // source domain gone after migration
	{"stopped", "recreated"}:         {},
	{"crashed", "*"}:                 {kind: VMFailure},
	{"pmsuspended", "*"}:             {kind: VMStopped}, // the guest suspended itself
	{"shutdown", "*"}:                {},                // the "stopped" event follows
	{"defined", "*"}:                 {},
	{"undefined", "*"}:               {},
}

// stateTable maps a domain's state and reason, as virt.DomainInfo gives them
// ("shutoff"/"crashed"), to the event the monitoring agent records when it
// (re)connects and re-reads every domain: what happened while it was blind
// shows up here instead of as an event. A reason of "*" matches any reason.
var stateTable = map[[2]string]lifecycleMapping{
	{"running", "*"}:               {kind: VMReachable},
	{"running", "postcopy-failed"}: {kind: VMFailure, postcopy: true},
	{"blocked", "*"}:               {kind: VMReachable},
	{"paused", "user"}:             {kind: VMStopped}, // owner paused
	{"paused", "ioerror"}:          {kind: VMFailure},
	{"paused", "watchdog"}:         {kind: VMFailure},
	{"paused", "crashed"}:          {kind: VMFailure},
	{"paused", "api-error"}:        {kind: VMFailure},
	{"paused", "postcopy-failed"}:  {kind: VMFailure, postcopy: true},
	{"paused", "*"}:                {}, // migration, postcopy, save, starting-up: transient
	{"shutoff", "crashed"}:         {kind: VMFailure},
	{"shutoff", "failed"}:          {kind: VMFailure},
	{"shutoff", "daemon"}:          {kind: VMFailure}, // libvirtd found QEMU gone on reconnect
	{"shutoff", "shutdown"}:        {kind: VMStopped},
	{"shutoff", "destroyed"}:       {kind: VMStopped},
	{"shutoff", "saved"}:           {kind: VMStopped},
	{"shutoff", "*"}:               {}, // migrated away, or never started
	{"crashed", "*"}:               {kind: VMFailure},
	{"pmsuspended", "*"}:           {kind: VMStopped},
	{"shutdown", "*"}:              {}, // being shut down: the stopped event follows
	{"nostate", "*"}:               {},
}

// StateKind maps a domain state and its reason (virt's words, e.g.
// "shutoff"/"crashed") to the SLA event the monitoring agent records when it
// re-reads the domain after connecting. ok is false when the state records
// nothing.
func StateKind(state, reason string) (k Kind, postcopy bool, ok bool) {
	return lookup(stateTable, state, reason)
}

func lookup(table map[[2]string]lifecycleMapping, a, b string) (Kind, bool, bool) {
	m, found := table[[2]string{a, b}]
	if !found {
		m, found = table[[2]string{a, "*"}]
	}
	if !found || m.kind == "" {
		return "", false, false
	}
	return m.kind, m.postcopy, true
}

// LifecycleKind maps a libvirt domain lifecycle event (virt's words, e.g.
// "stopped"/"crashed") to the SLA event the monitoring agent emits. ok is
// false when the event emits nothing. postcopy is set when the event reports
// a failed post-copy migration; the agent puts it in the payload.
func LifecycleKind(lifecycle, detail string) (k Kind, postcopy bool, ok bool) {
	return lookup(lifecycleTable, lifecycle, detail)
}

// ConnectionClosedKinds says what the monitoring agent emits when its libvirt
// connection to a host closes for reason (virt's words: "error", "eof",
// "keepalive", "client"): Monitor_Blind for the host, and VM_Unreachable for
// each VM it knew there. A close the agent asked for ("client") emits nothing.
func ConnectionClosedKinds(reason string) (host Kind, perVM Kind, ok bool) {
	if reason == "client" {
		return "", "", false
	}
	return MonitorBlind, VMUnreachable, true
}
