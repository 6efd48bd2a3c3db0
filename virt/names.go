package virt

import "libvirt.org/go/libvirt"

// Tables translating libvirt's numeric states and event details into the
// words virsh uses, so logs, the journal and the SLA mapping read naturally.

var stateNames = map[libvirt.DomainState]State{
	libvirt.DOMAIN_NOSTATE:     StateNoState,
	libvirt.DOMAIN_RUNNING:     StateRunning,
	libvirt.DOMAIN_BLOCKED:     StateBlocked,
	libvirt.DOMAIN_PAUSED:      StatePaused,
	libvirt.DOMAIN_SHUTDOWN:    StateShutdown,
	libvirt.DOMAIN_SHUTOFF:     StateShutoff,
	libvirt.DOMAIN_CRASHED:     StateCrashed,
	libvirt.DOMAIN_PMSUSPENDED: StatePMSuspend,
}

func stateReason(s libvirt.DomainState, r int) string {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return map[libvirt.DomainRunningReason]string{
			libvirt.DOMAIN_RUNNING_BOOTED: "booted", libvirt.DOMAIN_RUNNING_MIGRATED: "migrated",
			libvirt.DOMAIN_RUNNING_RESTORED: "restored", libvirt.DOMAIN_RUNNING_UNPAUSED: "unpaused",
			libvirt.DOMAIN_RUNNING_MIGRATION_CANCELED: "migration-canceled", libvirt.DOMAIN_RUNNING_CRASHED: "crashed",
			libvirt.DOMAIN_RUNNING_POSTCOPY: "postcopy", libvirt.DOMAIN_RUNNING_POSTCOPY_FAILED: "postcopy-failed",
		}[libvirt.DomainRunningReason(r)]
	case libvirt.DOMAIN_PAUSED:
		return map[libvirt.DomainPausedReason]string{
			libvirt.DOMAIN_PAUSED_USER: "user", libvirt.DOMAIN_PAUSED_MIGRATION: "migration",
			libvirt.DOMAIN_PAUSED_SAVE: "save", libvirt.DOMAIN_PAUSED_IOERROR: "ioerror",
			libvirt.DOMAIN_PAUSED_WATCHDOG: "watchdog", libvirt.DOMAIN_PAUSED_CRASHED: "crashed",
			libvirt.DOMAIN_PAUSED_STARTING_UP: "starting-up", libvirt.DOMAIN_PAUSED_POSTCOPY: "postcopy",
			libvirt.DOMAIN_PAUSED_POSTCOPY_FAILED: "postcopy-failed", libvirt.DOMAIN_PAUSED_API_ERROR: "api-error",
		}[libvirt.DomainPausedReason(r)]
	case libvirt.DOMAIN_SHUTOFF:
		return map[libvirt.DomainShutoffReason]string{
			libvirt.DOMAIN_SHUTOFF_SHUTDOWN: "shutdown", libvirt.DOMAIN_SHUTOFF_DESTROYED: "destroyed",
			libvirt.DOMAIN_SHUTOFF_CRASHED: "crashed", libvirt.DOMAIN_SHUTOFF_MIGRATED: "migrated",
			libvirt.DOMAIN_SHUTOFF_SAVED: "saved", libvirt.DOMAIN_SHUTOFF_FAILED: "failed",
			libvirt.DOMAIN_SHUTOFF_DAEMON: "daemon",
		}[libvirt.DomainShutoffReason(r)]
	}
	return ""
}

var lifecycleNames = map[libvirt.DomainEventType]string{
	libvirt.DOMAIN_EVENT_DEFINED: "defined", libvirt.DOMAIN_EVENT_UNDEFINED: "undefined",
	libvirt.DOMAIN_EVENT_STARTED: "started", libvirt.DOMAIN_EVENT_SUSPENDED: "suspended",
	libvirt.DOMAIN_EVENT_RESUMED: "resumed", libvirt.DOMAIN_EVENT_STOPPED: "stopped",
	libvirt.DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
	libvirt.DOMAIN_EVENT_CRASHED: "crashed",
}

func lifecycleDetail(ev libvirt.DomainEventType, d int) string {
	var m map[int]string
	switch ev {
	case libvirt.DOMAIN_EVENT_DEFINED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_DEFINED_ADDED): "added", int(libvirt.DOMAIN_EVENT_DEFINED_UPDATED): "updated", int(libvirt.DOMAIN_EVENT_DEFINED_RENAMED): "renamed"}
	case libvirt.DOMAIN_EVENT_UNDEFINED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_UNDEFINED_REMOVED): "removed", int(libvirt.DOMAIN_EVENT_UNDEFINED_RENAMED): "renamed"}
	case libvirt.DOMAIN_EVENT_STARTED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_STARTED_BOOTED): "booted", int(libvirt.DOMAIN_EVENT_STARTED_MIGRATED): "migrated",
			int(libvirt.DOMAIN_EVENT_STARTED_RESTORED): "restored", int(libvirt.DOMAIN_EVENT_STARTED_FROM_SNAPSHOT): "from-snapshot",
			int(libvirt.DOMAIN_EVENT_STARTED_WAKEUP): "wakeup", int(libvirt.DOMAIN_EVENT_STARTED_RECREATED): "recreated"}
	case libvirt.DOMAIN_EVENT_SUSPENDED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED): "paused", int(libvirt.DOMAIN_EVENT_SUSPENDED_MIGRATED): "migrated",
			int(libvirt.DOMAIN_EVENT_SUSPENDED_IOERROR): "ioerror", int(libvirt.DOMAIN_EVENT_SUSPENDED_WATCHDOG): "watchdog",
			int(libvirt.DOMAIN_EVENT_SUSPENDED_RESTORED): "restored", int(libvirt.DOMAIN_EVENT_SUSPENDED_API_ERROR): "api-error",
			int(libvirt.DOMAIN_EVENT_SUSPENDED_POSTCOPY): "postcopy", int(libvirt.DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED): "postcopy-failed",
			int(libvirt.DOMAIN_EVENT_SUSPENDED_GUEST_SHUTDOWN): "guest-shutdown"}
	case libvirt.DOMAIN_EVENT_RESUMED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_RESUMED_UNPAUSED): "unpaused", int(libvirt.DOMAIN_EVENT_RESUMED_MIGRATED): "migrated",
			int(libvirt.DOMAIN_EVENT_RESUMED_POSTCOPY): "postcopy", int(libvirt.DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED): "postcopy-failed"}
	case libvirt.DOMAIN_EVENT_STOPPED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN): "shutdown", int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED): "destroyed",
			int(libvirt.DOMAIN_EVENT_STOPPED_CRASHED): "crashed", int(libvirt.DOMAIN_EVENT_STOPPED_MIGRATED): "migrated",
			int(libvirt.DOMAIN_EVENT_STOPPED_SAVED): "saved", int(libvirt.DOMAIN_EVENT_STOPPED_FAILED): "failed",
			int(libvirt.DOMAIN_EVENT_STOPPED_RECREATED): "recreated"}
	case libvirt.DOMAIN_EVENT_SHUTDOWN:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_SHUTDOWN_FINISHED): "finished", int(libvirt.DOMAIN_EVENT_SHUTDOWN_GUEST): "guest", int(libvirt.DOMAIN_EVENT_SHUTDOWN_HOST): "host"}
	case libvirt.DOMAIN_EVENT_CRASHED:
		m = map[int]string{int(libvirt.DOMAIN_EVENT_CRASHED_PANICKED): "panicked", int(libvirt.DOMAIN_EVENT_CRASHED_CRASHLOADED): "crashloaded"}
	}
	return m[d]
}

var jobTypeNames = map[libvirt.DomainJobType]JobType{
	libvirt.DOMAIN_JOB_NONE: JobNone, libvirt.DOMAIN_JOB_BOUNDED: JobBounded,
	libvirt.DOMAIN_JOB_UNBOUNDED: JobUnbounded, libvirt.DOMAIN_JOB_COMPLETED: JobCompleted,
	libvirt.DOMAIN_JOB_FAILED: JobFailed, libvirt.DOMAIN_JOB_CANCELLED: JobCancelled,
}
