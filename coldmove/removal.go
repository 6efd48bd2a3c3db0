package coldmove

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferryvm/ferry/virt"
)

// RemovalInput is what the decision which source files to delete needs:
// the moved VM, its artifacts, and who else uses what on the source host.
type RemovalInput struct {
	VMUUID     string
	KeepSource bool
	Artifacts  []Artifact
	Usage      virt.HostUsage
}

// Removal is the decision about one artifact's source file.
type Removal struct {
	Index  int    `json:"index"`
	Path   string `json:"path"`
	Delete bool   `json:"delete"`
	// Reason says why a kept file is kept; KeptBy names its other users.
	Reason string   `json:"reason,omitempty"`
	KeptBy []string `json:"kept_by,omitempty"`
}

// DecideRemovals says, for each artifact, whether its source file may be
// deleted after the commit point, and why each kept one is kept. A file is
// deleted only if ferry copied it (verified or reused on the destination),
// no other domain (running or defined) names it directly or through a
// backing chain, no pool volume outside the move is backed by it (directly
// or through other files), no file kept on the source needs it as backing,
// it is not read-only/shared or --keep-source, and (disks, backing files)
// it lies in one of the source's own storage pools: ferry does not delete
// files outside the pools it copied from.
func DecideRemovals(in RemovalInput) []Removal {
	backing := map[string]string{}
	for _, v := range in.Usage.Volumes {
		if v.BackingPath != "" {
			backing[filepath.Clean(v.Path)] = filepath.Clean(v.BackingPath)
		}
	}
	chain := func(p string) []string {
		var out []string
		for seen := map[string]bool{}; p != "" && !seen[p]; p = backing[p] {
			seen[p] = true
			out = append(out, p)
		}
		return out
	}
	inMove := map[string]bool{}
	for _, a := range in.Artifacts {
		inMove[filepath.Clean(a.SrcPath)] = true
	}
	users := map[string][]string{}
	use := func(p, who string) {
		for _, u := range users[p] {
			if u == who {
				return
			}
		}
		users[p] = append(users[p], who)
	}
	for _, d := range in.Usage.Domains {
		if d.UUID == in.VMUUID {
			continue
		}
		state := string(d.State)
		if !d.Persistent {
			state += ", transient"
		}
		for _, f := range d.Files {
			who := fmt.Sprintf("domain %s (%s, %s)", d.Name, state, f.Use)
			for _, p := range chain(filepath.Clean(f.Path)) {
				use(p, who)
			}
		}
	}
	for _, v := range in.Usage.Volumes {
		vp := filepath.Clean(v.Path)
		if inMove[vp] || v.BackingPath == "" {
			continue
		}
		who := fmt.Sprintf("volume %s (pool %s) has it in its backing chain", vp, v.Pool)
		for _, p := range chain(filepath.Clean(v.BackingPath)) {
			use(p, who)
		}
	}
	poolDirs := map[string]bool{}
	for _, p := range in.Usage.Pools {
		if p.Active && p.Path != "" && !strings.HasPrefix(p.Name, "ferry-") {
			poolDirs[filepath.Clean(p.Path)] = true
		}
	}
	unresolved := strings.Join(in.Usage.Unresolved, ", ")

	out := make([]Removal, len(in.Artifacts))
	for i, a := range in.Artifacts {
		out[i] = Removal{Index: a.Index, Path: a.SrcPath}
	}
	// Kept files keep their own backing chains: iterate until no new keep.
	for changed := true; changed; {
		changed = false
		for i, a := range in.Artifacts {
			r := &out[i]
			if r.Reason != "" {
				continue
			}
			p := filepath.Clean(a.SrcPath)
			file := a.Kind == KindDisk || a.Kind == KindBacking
			switch {
			case a.State != StateVerified && a.State != StateReused:
				r.Reason = "not copied by this move (" + a.State + ")"
			case in.KeepSource:
				r.Reason = "--keep-source"
			case a.KeepOnSource:
				r.Reason = a.Note
				if r.Reason == "" {
					r.Reason = "read-only or shared image"
				}
			case len(users[p]) > 0:
				r.KeptBy = append([]string(nil), users[p]...)
				sort.Strings(r.KeptBy)
				r.Reason = "used by " + strings.Join(r.KeptBy, "; ")
			case file && !poolDirs[filepath.Dir(p)]:
				r.Reason = "not in a storage pool of the source: ferry deletes only files of the pools it copied from"
			case file && unresolved != "":
				r.Reason = "the backing chain of " + unresolved + " could not be read: it may use this file"
			default:
				continue
			}
			changed = true
			for _, b := range chain(p)[1:] {
				use(b, "kept file "+p+" (its backing chain)")
			}
		}
	}
	for i := range out {
		out[i].Delete = out[i].Reason == ""
	}
	return out
}

// ApplyRemovals copies the decisions into the artifacts: kept ones are
// marked KeepOnSource with the reason, so the journal (and recover) know.
func ApplyRemovals(arts []Artifact, rs []Removal) {
	for _, r := range rs {
		for i := range arts {
			if arts[i].Index != r.Index {
				continue
			}
			arts[i].KeepReason, arts[i].KeptBy = r.Reason, r.KeptBy
			if !r.Delete {
				arts[i].KeepOnSource = true
			}
		}
	}
}
