package virttest

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/ferryvm/ferry/virt"
)

// storageVolume is one file of a fake Storage.
type storageVolume struct {
	s    *Storage
	path string
	pool string
}

func (v *storageVolume) call(op StorageOp) error {
	return v.s.call(StorageCall{Op: op, Path: v.path, Pool: v.pool})
}

func (v *storageVolume) Info() (virt.VolumeInfo, error) {
	if err := v.call(OpVolumeInfo); err != nil {
		return virt.VolumeInfo{}, err
	}
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	return v.info()
}

// info describes the file. Call with s.mu held.
func (v *storageVolume) info() (virt.VolumeInfo, error) {
	b, ok := v.s.files[v.path]
	if !ok {
		return virt.VolumeInfo{}, notFound(v.path)
	}
	t := fmt.Sprintf("%d.0", v.s.gen[v.path])
	return virt.VolumeInfo{Name: filepath.Base(v.path), Path: v.path, Pool: v.pool, Format: v.s.formats[v.path],
		CapacityBytes: uint64(len(b)), AllocatedBytes: allocatedOf(b), PhysicalBytes: uint64(len(b)), Mtime: t, Ctime: t}, nil
}

func (v *storageVolume) Delete() error {
	if err := v.call(OpDelete); err != nil {
		return err
	}
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if _, ok := v.s.files[v.path]; !ok {
		return notFound(v.path)
	}
	delete(v.s.files, v.path)
	return nil
}

// Download streams the file in 4 KiB chunks; with sparse, chunks of zeros
// go as holes.
func (v *storageVolume) Download(ctx context.Context, w virt.SparseWriter, sparse bool) (virt.StreamStats, error) {
	st := virt.StreamStats{Sparse: sparse}
	if err := v.call(OpDownload); err != nil {
		return st, err
	}
	v.s.mu.Lock()
	b := append([]byte(nil), v.s.files[v.path]...)
	v.s.mu.Unlock()
	for off := 0; off < len(b); off += holeBlock {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		chunk := b[off:min(off+holeBlock, len(b))]
		if sparse && isHole(chunk) {
			if err := w.Hole(int64(len(chunk))); err != nil {
				return st, err
			}
			st.HoleBytes += int64(len(chunk))
			continue
		}
		if _, err := w.Write(chunk); err != nil {
			return st, err
		}
		st.DataBytes += int64(len(chunk))
	}
	return st, nil
}

// Upload collects the stream; Close overwrites the file from offset 0
// (keeping any longer tail, as a stream into an existing volume does).
func (v *storageVolume) Upload(ctx context.Context, sparse bool) (virt.VolumeWriter, error) {
	if err := v.call(OpUpload); err != nil {
		return nil, err
	}
	return &upload{v: v, ctx: ctx}, nil
}

type upload struct {
	v   *storageVolume
	ctx context.Context
	buf []byte
}

func (u *upload) call(op StorageOp) error {
	return u.v.s.call(StorageCall{Op: op, Path: u.v.path, Pool: u.v.pool, Offset: int64(len(u.buf))})
}

func (u *upload) Write(p []byte) (int, error) {
	if err := u.ctx.Err(); err != nil {
		return 0, err
	}
	if err := u.call(OpWrite); err != nil {
		return 0, err
	}
	u.buf = append(u.buf, p...)
	return len(p), nil
}

func (u *upload) Hole(n int64) error {
	if err := u.call(OpHole); err != nil {
		return err
	}
	u.buf = append(u.buf, make([]byte, n)...)
	return nil
}

func (u *upload) Close() error {
	if err := u.call(OpClose); err != nil {
		return err
	}
	s := u.v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.files[u.v.path]
	if len(old) > len(u.buf) {
		u.buf = append(u.buf, old[len(u.buf):]...)
	}
	s.files[u.v.path] = u.buf
	s.gen[u.v.path]++
	return nil
}

func (u *upload) Abort() error { return u.call(OpAbort) }
