package coldmove

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// ErrChecksum: the destination's copy does not read back as the source did.
var ErrChecksum = errors.New("checksum mismatch")

// CopyOptions steer one volume copy.
type CopyOptions struct {
	Sparse bool
	// BandwidthBytesPerSec caps the data rate (0: unlimited); holes are free.
	BandwidthBytesPerSec uint64
	// Progress is called after every chunk: data bytes sent so far and the
	// position in the file (data and holes).
	Progress func(sent, position int64)
}

// tee feeds one stream into the destination upload, the source-side digest
// and the progress callback, and paces it to the bandwidth cap.
type tee struct {
	ctx      context.Context
	up       virt.SparseWriter
	digest   *Digest
	opt      CopyOptions
	start    time.Time
	sent     int64
	position int64
}

func (t *tee) Write(p []byte) (int, error) {
	n, err := t.up.Write(p)
	if err != nil {
		return n, err
	}
	t.digest.Write(p)
	t.sent += int64(n)
	t.position += int64(n)
	t.report()
	return n, t.pace()
}

func (t *tee) Hole(length int64) error {
	if err := t.up.Hole(length); err != nil {
		return err
	}
	_ = t.digest.Hole(length)
	t.position += length
	t.report()
	return nil
}

func (t *tee) report() {
	if t.opt.Progress != nil {
		t.opt.Progress(t.sent, t.position)
	}
}

// pace sleeps until the data sent fits the bandwidth cap.
func (t *tee) pace() error {
	bw := t.opt.BandwidthBytesPerSec
	if bw == 0 {
		return nil
	}
	due := t.start.Add(time.Duration(float64(t.sent) / float64(bw) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-t.ctx.Done():
		return context.Cause(t.ctx)
	case <-timer.C:
		return nil
	}
}

// CopyVolume streams src into dst (which it overwrites) and returns the
// digest computed on the bytes read from the source. It does not verify the
// destination: see Checksum.
func CopyVolume(ctx context.Context, src, dst virt.Volume, opt CopyOptions) (string, virt.StreamStats, error) {
	up, err := dst.Upload(ctx, opt.Sparse)
	if err != nil {
		return "", virt.StreamStats{}, err
	}
	t := &tee{ctx: ctx, up: up, digest: NewDigest(), opt: opt, start: time.Now()}
	stats, err := src.Download(ctx, t, opt.Sparse)
	if err != nil {
		_ = up.Abort()
		return "", stats, err
	}
	if err := up.Close(); err != nil {
		return "", stats, err
	}
	return t.digest.Sum(), stats, nil
}

// digestWriter adapts a Digest to virt.SparseWriter with a context check.
type digestWriter struct{ d *Digest }

func (w digestWriter) Write(p []byte) (int, error) { return w.d.Write(p) }
func (w digestWriter) Hole(n int64) error          { return w.d.Hole(n) }

// Checksum reads a volume back through a stream and digests it.
func Checksum(ctx context.Context, v virt.Volume, sparse bool) (string, int64, error) {
	d := NewDigest()
	if _, err := v.Download(ctx, digestWriter{d}, sparse); err != nil {
		return "", 0, err
	}
	return d.Sum(), d.Len(), nil
}

// verifyCopy compares the destination's copy with the source's digest.
func verifyCopy(ctx context.Context, dst virt.Volume, want string, wantLen int64, sparse bool) error {
	got, n, err := Checksum(ctx, dst, sparse)
	if err != nil {
		return fmt.Errorf("reading the copy back: %w", err)
	}
	if got != want || n != wantLen {
		return fmt.Errorf("%w: source %s (%d bytes), destination %s (%d bytes)", ErrChecksum, want, wantLen, got, n)
	}
	return nil
}
