package coldmove

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ferryvm/ferry/units"
)

// checkClashes refuses two artifacts landing on one destination path.
func checkClashes(arts []Artifact) []string {
	var out []string
	seen := map[string]string{}
	for _, a := range arts {
		if other, ok := seen[a.DstPath]; ok {
			out = append(out, fmt.Sprintf("%s and %s would both be %s on the destination", other, a.Name(), a.DstPath))
		}
		seen[a.DstPath] = a.Name()
	}
	return out
}

// checkDestination refuses destination paths already taken (except by the
// copies of an interrupted run of this move, and backing files, which are
// reused when identical) and pools without the space.
func checkDestination(plan *Plan, dst Storage, dp *pools, prev map[string]Artifact) []string {
	var out []string
	type need struct {
		pool  string
		path  string
		avail uint64
		known bool
		bytes uint64
	}
	needs := map[string]*need{}
	var order []string
	for i := range plan.Artifacts {
		a := &plan.Artifacts[i]
		dir := filepath.Dir(a.DstPath)
		n, ok := needs[dir]
		if !ok {
			n = &need{path: dir, pool: a.DstPool}
			if pl, err := dp.dir(dir, false); err == nil {
				if pi, err := pl.Info(); err == nil {
					n.avail, n.known = pi.AvailableBytes, true
					if n.pool == "" {
						n.pool = pi.Name
					}
				}
			}
			needs[dir] = n
			order = append(order, dir)
		}
		if n.known {
			if pl, err := dp.dir(dir, false); err == nil {
				if _, err := pl.LookupVolume(filepath.Base(a.DstPath)); err == nil {
					p, ours := prev[a.Key()]
					switch {
					case ours && p.DstPath == a.DstPath:
						a.Note = strings.TrimPrefix(a.Note+"; copy of an interrupted run on the destination", "; ")
					case a.Kind == KindBacking:
						a.Note = "already on the destination: reused if identical, else the move fails"
						continue
					default:
						out = append(out, fmt.Sprintf("%s: the destination already has %s; remove it or choose another pool (--to-pool)", a.Name(), a.DstPath))
					}
				}
			}
		}
		n.bytes += onDiskBytes(*a, plan.Sparse)
	}
	for _, dir := range order {
		n := needs[dir]
		ps := PoolSpace{Pool: n.pool, Path: n.path, AvailableBytes: n.avail, NeedBytes: n.bytes, Enough: true, New: !n.known}
		if strings.HasPrefix(ps.Pool, "ferry-") {
			ps.Pool = "transient"
		}
		if n.known && n.bytes > n.avail {
			ps.Enough = false
			out = append(out, fmt.Sprintf("not enough space in destination pool %s (%s): the move needs %s, %s is free",
				n.pool, n.path, units.IEC(n.bytes), units.IEC(n.avail)))
		}
		plan.Pools = append(plan.Pools, ps)
	}
	return out
}

// onDiskBytes is what the copy will take on the destination's disk.
func onDiskBytes(a Artifact, sparse bool) uint64 {
	if sparse {
		return a.AllocatedBytes
	}
	return max(a.PhysicalBytes, a.AllocatedBytes)
}
