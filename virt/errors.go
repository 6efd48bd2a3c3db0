package virt

import (
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirt"
)

// Sentinel errors. Every error returned by this package wraps one of them
// (or a context error) so that callers can branch without libvirt codes.
var (
	ErrNotFound        = errors.New("not found")
	ErrUnreachable     = errors.New("host unreachable")
	ErrBadURI          = errors.New("malformed libvirt URI")
	ErrExists          = errors.New("already exists")
	ErrInvalidState    = errors.New("operation invalid in the current state")
	ErrAborted         = errors.New("job aborted")
	ErrNoSupport       = errors.New("not supported by this libvirt or hypervisor")
	ErrCPUIncompatible = errors.New("CPU incompatible")
	ErrAuth            = errors.New("authentication failed")
	ErrTimeout         = errors.New("operation timed out")
	ErrFailed          = errors.New("libvirt operation failed")
)

// Error keeps libvirt's own code and message next to the sentinel it maps to.
type Error struct {
	Op       string // what ferry was doing, e.g. "lookup domain web-01"
	Sentinel error
	Code     int    // libvirt error code, 0 if not from libvirt
	Message  string // libvirt's message, without the virError(...) wrapping
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %v", e.Op, e.Sentinel)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Message)
}

// Unwrap lets errors.Is match the sentinel.
func (e *Error) Unwrap() error { return e.Sentinel }

// wrap maps a libvirt error onto ferry's sentinels.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		return &Error{Op: op, Sentinel: ErrFailed, Message: err.Error()}
	}
	return &Error{Op: op, Sentinel: sentinelFor(lerr), Code: int(lerr.Code), Message: lerr.Message}
}

func sentinelFor(e libvirt.Error) error {
	switch e.Code {
	case libvirt.ERR_NO_DOMAIN, libvirt.ERR_NO_STORAGE_POOL, libvirt.ERR_NO_STORAGE_VOL:
		return ErrNotFound
	case libvirt.ERR_NO_CONNECT, libvirt.ERR_RPC, libvirt.ERR_SYSTEM_ERROR:
		return ErrUnreachable
	case libvirt.ERR_DOM_EXIST:
		return ErrExists
	case libvirt.ERR_OPERATION_INVALID:
		return ErrInvalidState
	case libvirt.ERR_OPERATION_ABORTED:
		return ErrAborted
	case libvirt.ERR_NO_SUPPORT, libvirt.ERR_OPERATION_UNSUPPORTED, libvirt.ERR_ARGUMENT_UNSUPPORTED:
		return ErrNoSupport
	case libvirt.ERR_CPU_INCOMPATIBLE:
		return ErrCPUIncompatible
	case libvirt.ERR_AUTH_FAILED, libvirt.ERR_AUTH_CANCELLED, libvirt.ERR_AUTH_UNAVAILABLE:
		return ErrAuth
	case libvirt.ERR_OPERATION_TIMEOUT, libvirt.ERR_AGENT_UNRESPONSIVE:
		return ErrTimeout
	}
	// libvirt reports a vanished peer in several ways; the message is the
	// only stable signal for some of them.
	if strings.Contains(e.Message, "connection") && (strings.Contains(e.Message, "closed") || strings.Contains(e.Message, "reset")) {
		return ErrUnreachable
	}
	return ErrFailed
}
