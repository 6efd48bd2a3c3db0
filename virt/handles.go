package virt

import "runtime"

// Helpers shared by the wrappers of libvirt's domain, pool and volume handles.

// describeAll describes every handle of a listing and frees it; one that
// fails to answer vanished between the list and the query, and is left out.
func describeAll[H, I any](handles []H, describe func(*H) (I, error), free func(*H) error) []I {
	out := make([]I, 0, len(handles))
	for i := range handles {
		info, err := describe(&handles[i])
		_ = free(&handles[i])
		if err != nil {
			continue
		}
		out = append(out, info)
	}
	return out
}

// freeWithWrapper frees a libvirt handle when its wrapper is collected:
// handles are cheap but hold a reference in libvirt, and a Free at every
// caller would be easy to miss. free must not reference w, or the
// finalizer never runs.
func freeWithWrapper[W any](w *W, free func() error) *W {
	runtime.SetFinalizer(w, func(*W) { _ = free() })
	return w
}

// nameOf is a handle's name for messages; "?" when libvirt cannot tell.
func nameOf(h interface{ GetName() (string, error) }) string {
	n, err := h.GetName()
	if err != nil {
		return "?"
	}
	return n
}
