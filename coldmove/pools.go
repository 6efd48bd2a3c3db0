package coldmove

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/ferryvm/ferry/virt"
)

// pools caches the pools a move opens on one host and releases the
// transient ones at the end.
type pools struct {
	s        Storage
	byDir    map[string]virt.Pool
	releases []func() error
}

func newPools(s Storage) *pools { return &pools{s: s, byDir: map[string]virt.Pool{}} }

func (p *pools) dir(dir string, build bool) (virt.Pool, error) {
	dir = filepath.Clean(dir)
	if pl, ok := p.byDir[dir]; ok {
		return pl, nil
	}
	pl, release, err := p.s.PoolForDir(dir, build)
	if err != nil {
		return nil, err
	}
	p.byDir[dir] = pl
	p.releases = append(p.releases, release)
	return pl, nil
}

func (p *pools) close() error {
	var errs []error
	for i := len(p.releases) - 1; i >= 0; i-- {
		if err := p.releases[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.releases, p.byDir = nil, map[string]virt.Pool{}
	return errors.Join(errs...)
}

// volumeAt finds the volume holding a file: in the pool libvirt already
// knows it in, else through a pool over its directory.
func (p *pools) volumeAt(path string, build bool) (virt.Volume, error) {
	if v, err := p.s.LookupVolumeByPath(path); err == nil {
		return v, nil
	} else if !errors.Is(err, virt.ErrNotFound) {
		return nil, err
	}
	pl, err := p.dir(filepath.Dir(path), build)
	if err != nil {
		return nil, err
	}
	v, err := pl.LookupVolume(filepath.Base(path))
	if errors.Is(err, virt.ErrNotFound) {
		// A file created since the pool's last scan.
		if rerr := pl.Refresh(); rerr == nil {
			v, err = pl.LookupVolume(filepath.Base(path))
		}
	}
	return v, err
}

// removeFile deletes a file through the pool over its directory; a file
// that is already gone is fine.
func removeFile(p *pools, path string) error {
	pl, err := p.dir(filepath.Dir(path), false)
	if err != nil {
		return err
	}
	v, err := pl.LookupVolume(filepath.Base(path))
	if errors.Is(err, virt.ErrNotFound) {
		if rerr := pl.Refresh(); rerr != nil {
			return rerr
		}
		v, err = pl.LookupVolume(filepath.Base(path))
	}
	if errors.Is(err, virt.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return v.Delete()
}

// RemoveFiles deletes files on a host through pools over their
// directories (for recovery). Missing files are fine.
func RemoveFiles(s Storage, paths []string) error {
	p := newPools(s)
	var errs []error
	for _, path := range paths {
		if err := removeFile(p, path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	errs = append(errs, p.close())
	return errors.Join(errs...)
}
