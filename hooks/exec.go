package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrUnsafe: the hooks directory or a hook could be changed by someone other
// than root or ferry's own user, so ferry runs none of them.
var ErrUnsafe = errors.New("unsafe hooks")

// executables lists the executable regular files of dir in name order,
// skipping hidden files and editor backups. ferry runs them as itself
// (usually root), so the directory and every hook must be owned by root or
// ferry's user and writable by nobody else; otherwise none runs.
func executables(dir string) ([]string, error) {
	dinfo, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no hooks directory: nothing to run
	}
	if err != nil {
		return nil, fmt.Errorf("%w: hooks directory %s: %w", ErrUnsafe, dir, err)
	}
	if !dinfo.IsDir() {
		return nil, fmt.Errorf("%w: hooks directory %s is not a directory", ErrUnsafe, dir)
	}
	if err := safeFile("hooks directory", dir, dinfo); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the hooks directory %s: %w", ErrUnsafe, dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		if err := safeFile("hook", filepath.Join(dir, n), info); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// safeFile refuses a hook or hooks directory that is group- or
// world-writable or owned by anyone but root or ferry's user.
func safeFile(what, path string, info os.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s %s is writable by its group or others (mode %04o): run chmod go-w %s; no hook runs until then",
			ErrUnsafe, what, path, perm, path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not root or ferry's user (uid %d): run chown root %s; no hook runs until then",
			ErrUnsafe, what, path, st.Uid, os.Geteuid(), path)
	}
	return nil
}

// environ is what an executable sees of the event besides stdin.
func environ(p Payload) []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"FERRY_EVENT=" + p.Event, "FERRY_STAGE=" + p.Stage, "FERRY_KIND=" + p.Kind,
		"FERRY_TIMESTAMP=" + p.Timestamp.Format(time.RFC3339Nano),
		"FERRY_MIGRATION_ID=" + p.MigrationID, "FERRY_VM=" + p.VM, "FERRY_VM_UUID=" + p.VMUUID,
		"FERRY_SOURCE=" + p.Source, "FERRY_SOURCE_URI=" + p.SourceURI,
		"FERRY_DESTINATION=" + p.Destination, "FERRY_DESTINATION_URI=" + p.DestinationURI,
		fmt.Sprintf("FERRY_DOWNTIME_MS=%d", p.DowntimeMS),
	}
}

// runExecutables executes every hook of the hooks directory directly (no
// shell) with the event as its argument, the payload on stdin and as
// FERRY_* variables. With stopAtFailure the first failure ends the round.
func (r *Runner) runExecutables(ctx context.Context, log *logrus.Entry, p Payload, body []byte, stopAtFailure bool) (int, []Failure) {
	dir := r.dir()
	names, err := executables(dir)
	if err != nil {
		// At pre-migration this vetoes the move: an unchecked gate is no gate.
		log.WithError(err).Error("hooks refused")
		return 0, []Failure{{Event: p.Event, What: "hooks", Err: err.Error()}}
	}
	env := environ(p)
	var failures []Failure
	ran := 0
	for _, n := range names {
		ran++
		f := runExecutable(ctx, log, filepath.Join(dir, n), n, p.Event, env, body, r.timeout())
		if f == nil {
			continue
		}
		failures = append(failures, *f)
		if stopAtFailure {
			break
		}
	}
	return ran, failures
}

func runExecutable(ctx context.Context, log *logrus.Entry, path, name, event string, env []string, body []byte, timeout time.Duration) *Failure {
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, path, event)
	cmd.Stdin = bytes.NewReader(body)
	cmd.Env = env
	out := &cappedBuffer{limit: outputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout also ends what a script started
	// (a `sleep` under sh would otherwise outlive it and hold the pipe).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	l := log.WithFields(logrus.Fields{"hook": name, "event": event, "ms": time.Since(start).Milliseconds()})
	if err == nil {
		l.Info("hook ran")
		return nil
	}
	f := &Failure{Event: event, What: "hook " + name, Err: err.Error(), Output: lastLine(out.String())}
	switch {
	case errors.Is(hctx.Err(), context.DeadlineExceeded):
		f.Err = fmt.Sprintf("timed out after %s", timeout)
	case ctx.Err() != nil:
		f.Err = "cancelled: " + ctx.Err().Error()
	}
	l.WithFields(logrus.Fields{"error": f.Err, "output": f.Output}).Warn("hook failed")
	return f
}

// cappedBuffer keeps the last part of what is written to it, up to limit bytes.
type cappedBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
