package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultHookTimeout bounds one hook executable.
const DefaultHookTimeout = 30 * time.Second

// DefaultHooksDir is used when neither the inventory nor a flag names one.
const DefaultHooksDir = "/etc/ferry/hooks.d"

// HookPayload is the JSON document a hook reads on stdin.
type HookPayload struct {
	Event          string `json:"event"` // activation, rollback
	MigrationID    string `json:"migration_id"`
	VM             string `json:"vm"`
	VMUUID         string `json:"vm_uuid"`
	Source         string `json:"source"`
	SourceURI      string `json:"source_uri"`
	Destination    string `json:"destination"`
	DestinationURI string `json:"destination_uri"`
	DowntimeMS     int64  `json:"downtime_ms"`
	Error          string `json:"error,omitempty"`
}

func (c *Controller) hooksDir() string {
	switch {
	case c.HooksDir != "":
		return c.HooksDir
	case c.Inventory != nil && c.Inventory.HooksDir != "":
		return c.Inventory.HooksDir
	}
	return DefaultHooksDir
}

// runHooks executes every executable file of the hooks directory in name
// order, directly (no shell), with the payload on stdin and as FERRY_*
// variables. A hook's failure is returned for the report; it never changes
// where the VM runs.
func (c *Controller) runHooks(ctx context.Context, log *logrus.Entry, event string, p HookPayload) []string {
	dir := c.hooksDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil // no hooks directory: nothing to run
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
		names = append(names, n)
	}
	sort.Strings(names)
	timeout := c.HookTimeout
	if timeout == 0 {
		timeout = DefaultHookTimeout
	}
	body, _ := json.Marshal(p)
	var failures []string
	for _, n := range names {
		path := filepath.Join(dir, n)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		cmd := exec.CommandContext(hctx, path, event)
		cmd.Stdin = bytes.NewReader(body)
		cmd.Env = []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"FERRY_EVENT=" + event, "FERRY_MIGRATION_ID=" + p.MigrationID, "FERRY_VM=" + p.VM,
			"FERRY_VM_UUID=" + p.VMUUID, "FERRY_SOURCE=" + p.Source, "FERRY_DESTINATION=" + p.Destination,
			fmt.Sprintf("FERRY_DOWNTIME_MS=%d", p.DowntimeMS),
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = time.Second
		start := time.Now()
		err := cmd.Run()
		cancel()
		l := log.WithFields(logrus.Fields{"hook": n, "event": event, "ms": time.Since(start).Milliseconds()})
		if err != nil {
			if hctx.Err() == context.DeadlineExceeded {
				err = fmt.Errorf("timed out after %s", timeout)
			}
			msg := fmt.Sprintf("hook %s: %v", n, err)
			if tail := lastLine(out.String()); tail != "" {
				msg += ": " + tail
			}
			l.Warn(msg)
			failures = append(failures, msg)
			continue
		}
		l.Info("hook ran")
	}
	return failures
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
