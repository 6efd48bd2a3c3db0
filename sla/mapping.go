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

// LifecycleKind maps a libvirt domain lifecycle event (virt's words, e.g.
// "stopped"/"crashed") to the SLA event the monitoring agent emits. ok is
// false when the event emits nothing. postcopy is set when the event reports
// a failed post-copy migration; the agent puts it in the payload.
func LifecycleKind(lifecycle, detail string) (k Kind, postcopy bool, ok bool) {
	m, found := lifecycleTable[[2]string{lifecycle, detail}]
	if !found {
		m, found = lifecycleTable[[2]string{lifecycle, "*"}]
	}
	if !found || m.kind == "" {
		return "", false, false
	}
	return m.kind, m.postcopy, true
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
