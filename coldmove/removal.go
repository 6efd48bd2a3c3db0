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
	u := newFileUsers(in)
	poolDirs := sourcePoolDirs(in.Usage.Pools)
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
			r.Reason, r.KeptBy = keepReason(a, in.KeepSource, u.users[p], poolDirs, unresolved)
			if r.Reason == "" {
				continue
			}
			changed = true
			for _, b := range u.chain(p)[1:] {
				u.use(b, "kept file "+p+" (its backing chain)")
			}
		}
	}
	for i := range out {
		out[i].Delete = out[i].Reason == ""
	}
	return out
}

// keepReason says why an artifact's source file must stay, "" if it may
// go; users are the others that use the file, poolDirs the directories of
// the source's own pools, unresolved the files whose chains were not read.
func keepReason(a Artifact, keepSource bool, users []string, poolDirs map[string]bool, unresolved string) (string, []string) {
	file := a.Kind == KindDisk || a.Kind == KindBacking
	switch {
	case a.State != StateVerified && a.State != StateReused:
		return "not copied by this move (" + a.State + ")", nil
	case keepSource:
		return "--keep-source", nil
	case a.KeepOnSource:
		if a.Note == "" {
			return "read-only or shared image", nil
		}
		return a.Note, nil
	case len(users) > 0:
		keptBy := append([]string(nil), users...)
		sort.Strings(keptBy)
		return "used by " + strings.Join(keptBy, "; "), keptBy
	case file && !poolDirs[filepath.Dir(filepath.Clean(a.SrcPath))]:
		return "not in a storage pool of the source: ferry deletes only files of the pools it copied from", nil
	case file && unresolved != "":
		return "the backing chain of " + unresolved + " could not be read: it may use this file", nil
	}
	return "", nil
}

// fileUsers is who uses which file on the source (by clean path), besides
// the moved VM, and the backing file of each volume.
type fileUsers struct {
	backing map[string]string
	users   map[string][]string
}

// newFileUsers records, for every file, the other domains that name it and
// the volumes outside the move that have it in their backing chains.
func newFileUsers(in RemovalInput) *fileUsers {
	u := &fileUsers{backing: map[string]string{}, users: map[string][]string{}}
	for _, v := range in.Usage.Volumes {
		if v.BackingPath != "" {
			u.backing[filepath.Clean(v.Path)] = filepath.Clean(v.BackingPath)
		}
	}
	inMove := map[string]bool{}
	for _, a := range in.Artifacts {
		inMove[filepath.Clean(a.SrcPath)] = true
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
			for _, p := range u.chain(filepath.Clean(f.Path)) {
				u.use(p, who)
			}
		}
	}
	for _, v := range in.Usage.Volumes {
		vp := filepath.Clean(v.Path)
		if inMove[vp] || v.BackingPath == "" {
			continue
		}
		who := fmt.Sprintf("volume %s (pool %s) has it in its backing chain", vp, v.Pool)
		for _, p := range u.chain(filepath.Clean(v.BackingPath)) {
			u.use(p, who)
		}
	}
	return u
}

// chain is a file and its backing files, as far as the volumes tell.
func (u *fileUsers) chain(p string) []string {
	var out []string
	for seen := map[string]bool{}; p != "" && !seen[p]; p = u.backing[p] {
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// use records who uses file p, once.
func (u *fileUsers) use(p, who string) {
	for _, x := range u.users[p] {
		if x == who {
			return
		}
	}
	u.users[p] = append(u.users[p], who)
}

// sourcePoolDirs are the directories of the source's own active pools
// (ferry's transient ones excluded): the only places ferry deletes files.
func sourcePoolDirs(pools []virt.PoolInfo) map[string]bool {
	dirs := map[string]bool{}
	for _, p := range pools {
		if p.Active && p.Path != "" && !strings.HasPrefix(p.Name, "ferry-") {
			dirs[filepath.Clean(p.Path)] = true
		}
	}
	return dirs
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
