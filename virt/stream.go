package virt

import (
	"context"
	"errors"
	"fmt"
	"io"

	"libvirt.org/go/libvirt"
)

// StreamBufferBytes is the chunk size of volume streams: large enough that
// a copy is not dominated by per-call overhead (libvirt's own virsh uses
// 256 KiB messages; one Recv may return several of them).
const StreamBufferBytes = 4 << 20

func (v *volume) Download(ctx context.Context, w SparseWriter, sparse bool) (StreamStats, error) {
	stats := StreamStats{Sparse: sparse}
	op := v.op("download")
	st, err := v.h.c.NewStream(0)
	if err != nil {
		return stats, wrapStorage(op, err)
	}
	defer st.Free()
	var flags libvirt.StorageVolDownloadFlags
	if sparse {
		flags = libvirt.STORAGE_VOL_DOWNLOAD_SPARSE_STREAM
	}
	if err := v.v.Download(st, 0, 0, flags); err != nil {
		return stats, wrapStorage(op, err)
	}
	buf := make([]byte, StreamBufferBytes)
	abort := func(err error) (StreamStats, error) {
		_ = st.Abort()
		return stats, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return abort(&Error{Op: op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(ctx))})
		}
		var n int
		if sparse {
			n, err = st.RecvFlags(buf, libvirt.STREAM_RECV_STOP_AT_HOLE)
		} else {
			n, err = st.Recv(buf)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return abort(wrapStorage(op, err))
		}
		switch {
		case n == -3: // at a hole
			hole, err := st.RecvHole(0)
			if err != nil {
				return abort(wrapStorage(op, err))
			}
			if err := w.Hole(hole); err != nil {
				return abort(err)
			}
			stats.HoleBytes += hole
		case n > 0:
			if _, err := w.Write(buf[:n]); err != nil {
				return abort(err)
			}
			stats.DataBytes += int64(n)
		}
	}
	return stats, wrapStorage(op, st.Finish())
}

func (v *volume) Upload(ctx context.Context, sparse bool) (VolumeWriter, error) {
	op := v.op("upload")
	st, err := v.h.c.NewStream(0)
	if err != nil {
		return nil, wrapStorage(op, err)
	}
	var flags libvirt.StorageVolUploadFlags
	if sparse {
		flags = libvirt.STORAGE_VOL_UPLOAD_SPARSE_STREAM
	}
	if err := v.v.Upload(st, 0, 0, flags); err != nil {
		st.Free()
		return nil, wrapStorage(op, err)
	}
	return &upload{ctx: ctx, st: st, sparse: sparse, op: op}, nil
}

type upload struct {
	ctx    context.Context
	st     *libvirt.Stream
	sparse bool
	op     string
	done   bool
	zeros  []byte
}

func (u *upload) Write(p []byte) (int, error) {
	if err := u.ctx.Err(); err != nil {
		return 0, &Error{Op: u.op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(u.ctx))}
	}
	sent := 0
	for sent < len(p) {
		n, err := u.st.Send(p[sent:])
		if err != nil {
			return sent, wrapStorage(u.op, err)
		}
		if n > 0 {
			sent += n
		}
	}
	return sent, nil
}

// Hole sends a hole, or zeros when the stream is dense.
func (u *upload) Hole(length int64) error {
	if u.sparse {
		if err := u.ctx.Err(); err != nil {
			return &Error{Op: u.op, Sentinel: ErrAborted, Message: fmt.Sprintf("cancelled: %v", context.Cause(u.ctx))}
		}
		return wrapStorage(u.op, u.st.SendHole(length, 0))
	}
	if u.zeros == nil {
		u.zeros = make([]byte, StreamBufferBytes)
	}
	for length > 0 {
		n := min(length, int64(len(u.zeros)))
		if _, err := u.Write(u.zeros[:n]); err != nil {
			return err
		}
		length -= n
	}
	return nil
}

func (u *upload) Close() error {
	if u.done {
		return nil
	}
	u.done = true
	defer u.st.Free()
	return wrapStorage(u.op, u.st.Finish())
}

func (u *upload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	defer u.st.Free()
	return wrapStorage(u.op+" (abort)", u.st.Abort())
}
