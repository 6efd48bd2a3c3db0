package orchestrator

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ownerToken names this process in a way PID reuse cannot fake: the PID and
// its start time (field 22 of /proc/PID/stat).
func ownerToken() string {
	pid := os.Getpid()
	return fmt.Sprintf("%d:%s", pid, procStart(pid))
}

func procStart(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name may contain spaces; fields after it are fixed.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// ownerAlive reports whether the process that wrote a journal row still runs.
func ownerAlive(token string) bool {
	pidStr, start, ok := strings.Cut(token, ":")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return token == ownerToken()
	}
	return start != "" && procStart(pid) == start
}

// OwnerPID is the process id in a journal row's owner token (0 if there is
// none), for messages such as "owned by ferry pid 1234".
func OwnerPID(token string) int {
	pidStr, _, _ := strings.Cut(token, ":")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// OwnerAlive reports whether the process that owns a journal row (or a
// drain) still runs; PID reuse does not fool it.
func OwnerAlive(token string) bool { return ownerAlive(token) }

// OwnedHere reports whether this process owns a journal row.
func OwnedHere(token string) bool { return token != "" && token == ownerToken() }
