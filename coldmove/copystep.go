package coldmove

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/ferryvm/ferry/units"
	"github.com/ferryvm/ferry/virt"
)

func (m *Move) copyStep(i int) Step {
	a := &m.arts[i]
	return Step{
		Name: "copy " + a.Name(),
		Do:   func(ctx context.Context) error { return m.copyArtifact(ctx, a) },
		Undo: func(context.Context) error { return m.removeCopy(a) },
		// A failed copy may leave a partial volume: remove it like a done one.
		UndoOnFailure: true,
	}
}

// copyArtifact puts one artifact on the destination: it settles a file
// already there (an interrupted run's copy, an identical backing file), or
// copies the artifact and verifies the copy.
func (m *Move) copyArtifact(ctx context.Context, a *Artifact) error {
	t0 := time.Now()
	if a.Index == 0 {
		m.stage(StageCopying)
	}
	dstPool, err := m.dp.dir(filepath.Dir(a.DstPath), true)
	if err != nil {
		return err
	}
	srcVol, err := m.sp.volumeAt(a.SrcPath, false)
	if err != nil {
		return err
	}
	existing, lerr := dstPool.LookupVolume(filepath.Base(a.DstPath))
	if lerr != nil && !errors.Is(lerr, virt.ErrNotFound) {
		return lerr
	}
	if existing != nil {
		settled, err := m.settleExisting(ctx, a, srcVol, existing)
		if settled || err != nil {
			return err
		}
	}
	return m.copyAndVerify(ctx, a, srcVol, dstPool, t0)
}

// existingCopy is what to do about a file already at an artifact's
// destination path.
type existingCopy int

const (
	resumeCopy   existingCopy = iota // this move's verified copy of an unchanged source: skip it if whole
	redoCopy                         // this move's partial copy: delete it, copy again
	reuseBacking                     // a backing file: reuse it if identical
	refuseCopy                       // someone else's file
)

// decideExisting says what to do about a file already at a's destination,
// given what an interrupted run of this move recorded for a (hadPrev).
func decideExisting(a, prev Artifact, hadPrev bool) existingCopy {
	ours := hadPrev && prev.DstPath == a.DstPath
	switch {
	case ours && prev.State == StateVerified && prev.Checksum != "" && prev.SourceStamp != "" && prev.SourceStamp == a.SourceStamp:
		return resumeCopy
	case ours:
		return redoCopy
	case a.Kind == KindBacking:
		return reuseBacking
	}
	return refuseCopy
}

// settleExisting acts on decideExisting. It reports whether the artifact
// is settled (skipped or reused); false with no error means the file was
// removed and the artifact is to be copied.
func (m *Move) settleExisting(ctx context.Context, a *Artifact, srcVol, existing virt.Volume) (bool, error) {
	prev, hadPrev := m.Previous[a.Key()]
	switch decideExisting(*a, prev, hadPrev) {
	case resumeCopy:
		if vi, err := existing.Info(); err == nil && vi.PhysicalBytes == a.PhysicalBytes {
			return true, m.skipVerified(a, prev)
		}
		// Not whole after all: start it over like a partial copy.
		return false, existing.Delete()
	case redoCopy:
		// A partial copy of the interrupted run: start it over.
		return false, existing.Delete()
	case reuseBacking:
		return true, m.reuseIdentical(ctx, a, srcVol, existing)
	default:
		return false, fmt.Errorf("the destination already has %s", a.DstPath)
	}
}

// skipVerified takes over the verified copy of an interrupted run.
func (m *Move) skipVerified(a *Artifact, prev Artifact) error {
	a.Skipped, a.Checksum, a.SentBytes, a.Sparse, a.State = true, prev.Checksum, 0, prev.Sparse, StateVerified
	m.movePos += int64(a.PhysicalBytes)
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, PositionBytes: int64(a.PhysicalBytes), TotalBytes: int64(a.PhysicalBytes),
		Message: fmt.Sprintf("%s: already copied and verified by the interrupted run (%s), skipped", a.Name(), short(prev.Checksum))})
	return m.record(a)
}

// reuseIdentical reuses a backing file the destination already has when
// its contents equal the source's; it is not ours, so never deleted.
func (m *Move) reuseIdentical(ctx context.Context, a *Artifact, srcVol, existing virt.Volume) error {
	srcSum, _, err := Checksum(ctx, srcVol, m.Plan.Sparse)
	if err != nil {
		return err
	}
	dstSum, _, err := Checksum(ctx, existing, m.Plan.Sparse)
	if err != nil {
		return err
	}
	if srcSum != dstSum {
		return fmt.Errorf("backing file %s exists on the destination with other contents", a.DstPath)
	}
	a.State, a.Checksum = StateReused, srcSum
	m.movePos += int64(a.PhysicalBytes)
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, Message: fmt.Sprintf("%s: identical copy already on the destination, reused", a.Name())})
	return m.record(a)
}

// copyAndVerify streams the artifact into a new destination volume and
// checks the copy reads back the same. "copying" is journaled first, so
// that recovery knows a partial copy may exist (the step's undo removes it).
func (m *Move) copyAndVerify(ctx context.Context, a *Artifact, srcVol virt.Volume, dstPool virt.Pool, t0 time.Time) error {
	a.State = StateCopying
	if err := m.record(a); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, TotalBytes: int64(a.PhysicalBytes),
		Message: fmt.Sprintf("copying %s: %s -> %s", a.Name(), a.SrcPath, a.DstPath)})
	dstVol, err := dstPool.CreateVolume(rawVolume(filepath.Base(a.DstPath), a.PhysicalBytes))
	if err != nil {
		return err
	}
	basePos := m.movePos
	sum, stats, err := m.stream(ctx, a, srcVol, dstVol)
	if err != nil {
		return err
	}
	if err := m.verifyArtifact(ctx, a, dstPool, sum, stats); err != nil {
		return err
	}
	a.Checksum, a.State, a.DurationMS = sum, StateVerified, time.Since(t0).Milliseconds()
	m.movePos = basePos + int64(a.PhysicalBytes)
	how := "sparse"
	if !stats.Sparse {
		how = "dense"
	}
	m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, SentBytes: stats.DataBytes, PositionBytes: int64(a.PhysicalBytes), TotalBytes: int64(a.PhysicalBytes),
		Message: fmt.Sprintf("%s: %s sent (%s), verified on the destination %s", a.Name(), units.IEC(uint64(stats.DataBytes)), how, short(sum))})
	return m.record(a)
}

// rawVolume defines an empty volume of the file's length: the stream
// carries the file as stored (a qcow2 container too), so on the
// destination it is a raw byte copy whatever the image format.
func rawVolume(name string, length uint64) libvirtxml.StorageVolume {
	return libvirtxml.StorageVolume{
		Name:       name,
		Capacity:   &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: length},
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
	}
}

// stream copies the artifact's bytes, counting them into the move's
// totals as they go.
func (m *Move) stream(ctx context.Context, a *Artifact, srcVol, dstVol virt.Volume) (string, virt.StreamStats, error) {
	baseSent, basePos := m.moveSent, m.movePos
	sum, stats, err := CopyVolume(ctx, srcVol, dstVol, CopyOptions{Sparse: m.Plan.Sparse, BandwidthBytesPerSec: m.BandwidthBytesPerSec,
		Progress: func(sent, pos int64) {
			m.moveSent, m.movePos = baseSent+sent, basePos+pos
			m.progress(Progress{Step: "copy", Artifact: a.Name(), Index: a.Index, SentBytes: sent, PositionBytes: pos, TotalBytes: int64(a.PhysicalBytes)})
		}})
	a.SentBytes, a.Sparse = stats.DataBytes, stats.Sparse
	m.out.SentBytes += stats.DataBytes
	return sum, stats, err
}

// verifyArtifact reads the copy back on the destination and compares its
// digest and length with what was read on the source.
func (m *Move) verifyArtifact(ctx context.Context, a *Artifact, dstPool virt.Pool, sum string, stats virt.StreamStats) error {
	_ = dstPool.Refresh()
	check, err := dstPool.LookupVolume(filepath.Base(a.DstPath))
	if err != nil {
		return fmt.Errorf("the copy %s vanished: %w", a.DstPath, err)
	}
	m.progress(Progress{Step: "verify", Artifact: a.Name(), Index: a.Index, Message: "verifying " + a.Name() + " on the destination"})
	if err := verifyCopy(ctx, check, sum, stats.DataBytes+stats.HoleBytes, m.Plan.Sparse); err != nil {
		return fmt.Errorf("%s: %w", a.DstPath, err)
	}
	return nil
}

func short(sum string) string {
	s := strings.TrimPrefix(sum, DigestPrefix)
	if len(s) > 12 {
		s = s[:12]
	}
	return DigestPrefix + s
}

// removeCopy deletes the destination's copy of an artifact (rollback).
func (m *Move) removeCopy(a *Artifact) error {
	if a.State != StateVerified && a.State != StateCopying {
		return nil // reused, or never made
	}
	if err := removeFile(m.dp, a.DstPath); err != nil {
		return err
	}
	a.State = StateRemoved
	return m.record(a)
}
