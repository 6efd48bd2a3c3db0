package coldmove

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/ferryvm/ferry/virt"
)

var logNameRE = regexp.MustCompile(`^(.+)\.log(\.[0-9]+)?$`)

func listLogs(sp *pools, dir, vm string) ([]virt.VolumeInfo, error) {
	pl, err := sp.dir(dir, false)
	if err != nil {
		return nil, err
	}
	_ = pl.Refresh()
	vols, err := pl.ListVolumes()
	if err != nil {
		return nil, err
	}
	var out []virt.VolumeInfo
	for _, v := range vols {
		if m := logNameRE.FindStringSubmatch(v.Name); m != nil && m[1] == vm {
			if v.Path == "" {
				v.Path = filepath.Join(dir, v.Name)
			}
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// LogDestName keeps a log file's name on the destination unless a file of
// that name is already there (an earlier stay of a VM of the same name), in
// which case the copy is named after the source host.
func LogDestName(name, sourceHost string, taken map[string]bool) string {
	if !taken[name] {
		return name
	}
	if sourceHost == "" {
		sourceHost = "source"
	}
	cand := name + ".from-" + sourceHost
	for i := 2; taken[cand]; i++ {
		cand = fmt.Sprintf("%s.from-%s.%d", name, sourceHost, i)
	}
	return cand
}

// addLogs plans the VM's log files, renamed where the destination already
// has a file of the name. A source without the log directory has none.
func (p *planner) addLogs(vm string) {
	logs, err := listLogs(p.sp, p.opt.LogDir, vm)
	if err != nil {
		return
	}
	taken := p.destNames(p.opt.LogDir)
	for _, vi := range logs {
		name := LogDestName(vi.Name, p.opt.SourceName, taken)
		p.add(Artifact{Kind: KindLog, SrcPath: vi.Path, Format: "raw", CapacityBytes: vi.CapacityBytes,
			AllocatedBytes: vi.AllocatedBytes, PhysicalBytes: vi.PhysicalBytes, DstPath: filepath.Join(p.opt.LogDir, name)})
	}
}

// destNames lists the file names in a destination directory; nil when it
// cannot be read.
func (p *planner) destNames(dir string) map[string]bool {
	pl, err := p.dp.dir(dir, false)
	if err != nil {
		return nil
	}
	vols, err := pl.ListVolumes()
	if err != nil {
		return nil
	}
	names := map[string]bool{}
	for _, v := range vols {
		names[v.Name] = true
	}
	return names
}
