package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every numeric flag has a range; outside it ferry exits 2 naming the flag
// and its range, before anything is opened or moved.
func TestNumericFlagsOutOfRange(t *testing.T) {
	for _, s := range []struct {
		args []string
		want string
	}{
		{[]string{"drain", "host1", "--parallel", "9223372036854775807"}, "--parallel 9223372036854775807: out of range, give 1 to 64"},
		{[]string{"drain", "host1", "--max-per-target", "65"}, "--max-per-target 65: out of range, give 1 to 64"},
		{[]string{"drain", "host1", "--retries", "101"}, "--retries 101: out of range, give 0 to 100"},
		{[]string{"drain", "host1", "--backoff", "2h"}, "--backoff 2h0m0s: out of range"},
		{[]string{"drain", "host1", "--bandwidth", "17592186044416"}, "--bandwidth 17592186044416: out of range, give 1 to 1048576"},
		{[]string{"migrate", "web-01", "--to", "host2", "--bandwidth", "17592186044416"}, "--bandwidth 17592186044416: out of range"},
		{[]string{"migrate", "web-01", "--to", "host2", "--bandwidth", "18446744073709551615"}, "--bandwidth 18446744073709551615: out of range"},
		{[]string{"migrate", "web-01", "--to", "host2", "--cold", "--bandwidth", "17592186044416"}, "--bandwidth 17592186044416: out of range"},
		{[]string{"migrate", "web-01", "--to", "host2", "--max-downtime", "3000s"}, "--max-downtime 50m0s: out of range, give 1ms to 33m20s"},
		{[]string{"migrate", "web-01", "--to", "host2", "--max-downtime-ceiling", "1h"}, "--max-downtime-ceiling 1h0m0s: out of range"},
		{[]string{"migrate", "web-01", "--to", "host2", "--completion-timeout", "500ms"}, "--completion-timeout 500ms: out of range, give 1s to 168h0m0s"},
		{[]string{"migrate", "web-01", "--to", "host2", "--timeout", "9000h"}, "--timeout 9000h0m0s: out of range"},
		{[]string{"migrate", "web-01", "--to", "host2", "--cold", "--shutdown", "--shutdown-timeout", "25h"}, "--shutdown-timeout 25h0m0s: out of range"},
		{[]string{"history", "--limit", "-1"}, "--limit -1: out of range"},
		{[]string{"sla", "events", "--limit", "1000001"}, "--limit 1000001: out of range"},
		{[]string{"sla", "report", "--target", "NaN"}, "--target NaN: a percentage above 0 and at most 100"},
		{[]string{"sla", "report", "--target", "+Inf"}, "--target +Inf: a percentage above 0 and at most 100"},
		{[]string{"sla", "report", "--poll-interval", "48h"}, "--poll-interval 48h0m0s: must be above 0 and at most 24h"},
		{[]string{"sla", "monitor", "--poll-interval", "48h"}, "--poll-interval 48h0m0s: give 100ms to 24h"},
		{[]string{"sla", "monitor", "--unreachable-after", "1000"}, "--unreachable-after 1000: give 1 to 100"},
	} {
		inv := filepath.Join(t.TempDir(), "ferry.yaml")
		if err := os.WriteFile(inv, []byte("hosts:\n  - {name: host1, uri: 'qemu+tcp://127.0.0.1/system'}\n  - {name: host2, uri: 'qemu+tcp://127.0.0.2/system'}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		root := newRootCmd()
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs(append([]string{"--state", filepath.Join(t.TempDir(), "ferry.db"), "--config", inv}, s.args...))
		err := root.ExecuteContext(context.Background())
		if code := exitCode(err); code != 2 || err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("ferry %s: exit %d, error %v; want exit 2 and %q", strings.Join(s.args, " "), code, err, s.want)
		}
	}
}
