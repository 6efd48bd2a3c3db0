package journal

import (
	"context"
	"encoding/json"

	"github.com/ferryvm/ferry/coldmove"
)

// A cold move's artifacts: each file's state, destination path, bytes and
// checksum, and what its source looked like when the copy began, so that
// recover can revert or finish the move and a re-run can resume it.

// SaveArtifact records one artifact's state.
func (j *Journal) SaveArtifact(ctx context.Context, id string, a coldmove.Artifact) error {
	_, err := j.exec(ctx, j.db, `INSERT INTO cold_artifacts
		(migration_id, idx, kind, target, src_path, dst_pool, dst_path, format, capacity_bytes, allocated_bytes, physical_bytes,
		 sent_bytes, sparse, keep_on_source, skipped, checksum, state, duration_ms, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (migration_id, idx) DO UPDATE SET dst_path = excluded.dst_path, sent_bytes = excluded.sent_bytes,
		 sparse = excluded.sparse, skipped = excluded.skipped, checksum = excluded.checksum, state = excluded.state,
		 keep_on_source = excluded.keep_on_source, duration_ms = excluded.duration_ms, updated_at = excluded.updated_at`,
		id, a.Index, string(a.Kind), a.Target, a.SrcPath, a.DstPool, a.DstPath, a.Format, int64(a.CapacityBytes), int64(a.AllocatedBytes),
		int64(a.PhysicalBytes), a.SentBytes, a.Sparse, a.KeepOnSource, a.Skipped, a.Checksum, a.State, a.DurationMS, ms(j.now()))
	if err != nil {
		return dbErr(err, "journal artifact %s/%d", id, a.Index)
	}
	// What the source file looked like when the copy began, and why it was
	// kept: resume and recover decide on these.
	keptBy, _ := json.Marshal(a.KeptBy)
	_, err = j.exec(ctx, j.db, `INSERT INTO cold_artifact_source (migration_id, idx, source_stamp, keep_reason, kept_by)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (migration_id, idx) DO UPDATE SET source_stamp = excluded.source_stamp,
		keep_reason = excluded.keep_reason, kept_by = excluded.kept_by`, id, a.Index, a.SourceStamp, a.KeepReason, string(keptBy))
	if err != nil {
		return dbErr(err, "journal artifact %s/%d", id, a.Index)
	}
	return nil
}

// Artifacts returns a cold migration's artifacts in plan order.
func (j *Journal) Artifacts(ctx context.Context, id string) ([]coldmove.Artifact, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT a.idx, a.kind, a.target, a.src_path, a.dst_pool, a.dst_path, a.format, a.capacity_bytes, a.allocated_bytes,
		a.physical_bytes, a.sent_bytes, a.sparse, a.keep_on_source, a.skipped, a.checksum, a.state, a.duration_ms,
		COALESCE(s.source_stamp, ''), COALESCE(s.keep_reason, ''), COALESCE(s.kept_by, '')
		FROM cold_artifacts a LEFT JOIN cold_artifact_source s ON s.migration_id = a.migration_id AND s.idx = a.idx
		WHERE a.migration_id = ? ORDER BY a.idx`, id)
	if err != nil {
		return nil, dbErr(err, "journal artifacts")
	}
	defer rows.Close()
	var out []coldmove.Artifact
	for rows.Next() {
		var a coldmove.Artifact
		var kind string
		var capa, alloc, phys int64
		var keptBy string
		if err := rows.Scan(&a.Index, &kind, &a.Target, &a.SrcPath, &a.DstPool, &a.DstPath, &a.Format, &capa, &alloc, &phys,
			&a.SentBytes, &a.Sparse, &a.KeepOnSource, &a.Skipped, &a.Checksum, &a.State, &a.DurationMS,
			&a.SourceStamp, &a.KeepReason, &keptBy); err != nil {
			return nil, dbErr(err, "journal artifacts")
		}
		if keptBy != "" && keptBy != "null" {
			_ = json.Unmarshal([]byte(keptBy), &a.KeptBy)
		}
		a.Kind, a.CapacityBytes, a.AllocatedBytes, a.PhysicalBytes = coldmove.Kind(kind), uint64(capa), uint64(alloc), uint64(phys)
		out = append(out, a)
	}
	return out, dbErr(rows.Err(), "journal artifacts")
}
