package hooks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// writeHook puts a /bin/sh program into the hooks directory.
func writeHook(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestExecutableHooks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "order")
	writeHook(t, dir, "20-second", `echo 20 >> "`+out+`"`)
	writeHook(t, dir, "10-first", `echo 10 >> "`+out+`"`)
	writeHook(t, dir, ".hidden", `echo hidden >> "`+out+`"`)
	writeHook(t, dir, "30-backup~", `echo backup >> "`+out+`"`)
	if err := os.WriteFile(filepath.Join(dir, "40-not-executable"), []byte("#!/bin/sh\necho no >> "+out), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "50-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeHook(t, dir, "60-fails", "echo one\necho two\nexit 4")
	writeHook(t, dir, "70-after", `echo 70 >> "`+out+`"`)
	c := &Runner{Dir: dir, Timeout: 5 * time.Second}
	log := logrus.NewEntry(logrus.New())

	rep := c.Dispatch(context.Background(), log, Payload{Event: Activation, Kind: "live"})
	if got, _ := os.ReadFile(out); string(got) != "10\n20\n70\n" {
		t.Fatalf("ran %q", got)
	}
	if rep.Ran != 4 || len(rep.Failures) != 1 || rep.Errors()[0] != `activation: hook 60-fails: exit status 4: "two"` {
		t.Fatalf("report %+v %q", rep, rep.Errors())
	}
	// At pre-migration the first failure ends the round.
	_ = os.Remove(out)
	rep = c.Dispatch(context.Background(), log, Payload{Event: PreMigration, Kind: "live"})
	if got, _ := os.ReadFile(out); string(got) != "10\n20\n" || len(rep.Failures) != 1 {
		t.Fatalf("ran %q, report %+v", got, rep)
	}
	// No directory: nothing to run.
	c.Dir = filepath.Join(dir, "missing")
	if rep := c.Dispatch(context.Background(), log, Payload{Event: Activation}); rep.Ran != 0 || len(rep.Failures) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A timed-out hook's children die with it: the round ends at the timeout,
// not when a grandchild that holds the output pipe would have exited.
func TestHookTimeoutKillsItsChildren(t *testing.T) {
	dir := t.TempDir()
	writeHook(t, dir, "10-hangs", "sleep 30 &\nsleep 30\n")
	c := &Runner{Dir: dir, Timeout: 200 * time.Millisecond}
	start := time.Now()
	rep := c.Dispatch(context.Background(), logrus.NewEntry(logrus.New()), Payload{Event: Activation})
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s", d)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Err != "timed out after 200ms" {
		t.Fatalf("report %+v", rep)
	}
}

// Webhooks of one event run concurrently: two that each take most of their
// timeout both succeed, which they could not one after the other.
func TestWebhooksRunConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(2)
	both := make(chan struct{})
	go func() { wg.Wait(); close(both) }()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Done()
		select {
		case <-both: // each answers only once the other one was called too
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done():
		}
	})
	s1, s2 := httptest.NewServer(h), httptest.NewServer(h)
	defer s1.Close()
	defer s2.Close()
	c := &Runner{Dir: t.TempDir(), Webhooks: []Webhook{
		{URL: s1.URL, Timeout: 5 * time.Second}, {URL: s2.URL, Timeout: 5 * time.Second}}}
	rep := c.Dispatch(context.Background(), logrus.NewEntry(logrus.New()), Payload{Event: Activation})
	if rep.Ran != 2 || len(rep.Failures) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A hooks directory or hook that someone other than root or ferry's user
// could change is refused: nothing in it runs, and at pre-migration the move
// is vetoed with a message that says what to fix.
func TestUnsafeHooksAreRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hooks.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "ran")
	hook := filepath.Join(dir, "10-gate")
	writeHook(t, dir, "10-gate", `echo ran >> "`+out+`"`)
	c := &Runner{Dir: dir, Timeout: 5 * time.Second}
	log := logrus.NewEntry(logrus.New())
	dispatch := func() Report {
		t.Helper()
		_ = os.Remove(out)
		return c.Dispatch(context.Background(), log, Payload{Event: PreMigration, Kind: "live"})
	}
	if rep := dispatch(); rep.Ran != 1 || len(rep.Failures) != 0 {
		t.Fatalf("safe hooks: %+v", rep)
	}
	for _, tc := range []struct {
		name  string
		setup func() error
		undo  func() error
		want  string
	}{
		{"world-writable directory", func() error { return os.Chmod(dir, 0o777) }, func() error { return os.Chmod(dir, 0o755) },
			"hooks directory " + dir + " is writable by its group or others (mode 0777): run chmod go-w"},
		{"group-writable directory", func() error { return os.Chmod(dir, 0o775) }, func() error { return os.Chmod(dir, 0o755) },
			"(mode 0775)"},
		{"group-writable hook", func() error { return os.Chmod(hook, 0o775) }, func() error { return os.Chmod(hook, 0o755) },
			"hook " + hook + " is writable by its group or others (mode 0775)"},
		{"world-writable hook", func() error { return os.Chmod(hook, 0o757) }, func() error { return os.Chmod(hook, 0o755) },
			"(mode 0757)"},
		{"hook owned by another user", func() error { return os.Chown(hook, 4242, 4242) }, func() error { return os.Chown(hook, os.Geteuid(), os.Getegid()) },
			"hook " + hook + " is owned by uid 4242, not root or ferry's user"},
		{"directory owned by another user", func() error { return os.Chown(dir, 4242, 4242) }, func() error { return os.Chown(dir, os.Geteuid(), os.Getegid()) },
			"hooks directory " + dir + " is owned by uid 4242"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.setup(); err != nil {
				if os.Geteuid() != 0 {
					t.Skipf("needs root: %v", err)
				}
				t.Fatal(err)
			}
			defer func() {
				if err := tc.undo(); err != nil {
					t.Fatal(err)
				}
			}()
			rep := dispatch()
			if _, err := os.Stat(out); err == nil {
				t.Fatal("an unsafe hook ran")
			}
			if len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0].Err, tc.want) || !strings.Contains(rep.Failures[0].Err, "no hook runs until then") {
				t.Fatalf("report %+v, want a failure containing %q", rep, tc.want)
			}
		})
	}
}
