package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/sla"
)

// run executes the CLI in-process against a state file and returns stdout
// and the exit code main would pick.
func run(t *testing.T, state string, stdin string, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--state", state, "--config", filepath.Join(t.TempDir(), "none.yaml")}, args...))
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errb.WriteString(err.Error())
	}
	t.Logf("ferry %s -> %d\n%s%s", strings.Join(args, " "), exitCode(err), out.String(), errb.String())
	return out.String(), exitCode(err)
}

func TestSLACommands(t *testing.T) {
	state := filepath.Join(t.TempDir(), "ferry.db")
	steps := []struct {
		args []string
		code int
	}{
		{[]string{"sla", "record", "VM_Failure", "--host", "host1", "--vm", "web-01", "--at", "2025-06-01T10:00:00Z", "--detail", "panic"}, 0},
		{[]string{"sla", "record", "vm_reachable", "--host", "host1", "--vm", "web-01", "--at", "2025-06-01T10:04:30Z"}, 0},
		{[]string{"sla", "record", "VM_Failure", "--host", "host1", "--vm", "web-01", "--at", "2025-06-01T10:00:00Z", "--detail", "panic"}, 0}, // already recorded
		{[]string{"sla", "record", "PS_Timeout"}, 2},                                     // no host
		{[]string{"sla", "record", "PS_Whatever", "--host", "h"}, 2},                     // unknown kind
		{[]string{"sla", "record", "PS_Timeout", "--host", "h", "--at", "yesterday"}, 2}, // bad time
		{[]string{"sla", "report", "--from", "2025-06-01", "--to", "2025-06-01"}, 2},     // empty period
		{[]string{"sla", "report", "--target", "120"}, 2},
		{[]string{"sla", "report", "--vm", "nobody", "--from", "2025-06-01T00:00:00Z", "--to", "2025-06-02T00:00:00Z"}, 2},
		{[]string{"sla", "maintenance", "add", "--host", "host1", "--vm", "web-01", "--from", "-1h", "--to", "now", "--reason", "x"}, 2},
		{[]string{"sla", "maintenance", "add", "--host", "host1", "--from", "2025-06-01T11:00:00Z", "--to", "2025-06-01T10:00:00Z", "--reason", "x"}, 2},
		{[]string{"sla", "maintenance", "remove", "99"}, 2},
		{[]string{"sla", "nonsense"}, 2},
		{[]string{"sla", "events", "--kind", "nope"}, 2},
		{[]string{"history", "-o", "csv"}, 2}, // csv is the report's only
		{[]string{"sla", "monitor", "--poll-interval", "1s", "--poll-timeout", "2s"}, 2},
		{[]string{"sla", "monitor"}, 2}, // no inventory: nothing to monitor
	}
	for _, s := range steps {
		if _, code := run(t, state, "", s.args...); code != s.code {
			t.Fatalf("ferry %s: exit %d, want %d", strings.Join(s.args, " "), code, s.code)
		}
	}
	out, code := run(t, state, "", "sla", "events", "-o", "json")
	var evs []sla.Event
	if code != 0 || json.Unmarshal([]byte(out), &evs) != nil || len(evs) != 2 {
		t.Fatalf("events: exit %d, %d events: %s", code, len(evs), out)
	}

	// An import with a bad line imports nothing and names the line.
	bad := `{"kind":"PS_Timeout","host":"host2","observed_at":"2025-06-01T12:00:00Z"}
{"kind":"PS_Timeout","host":"host2","observed_at":"noon"}
`
	path := filepath.Join(t.TempDir(), "ext.jsonl")
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	var errb bytes.Buffer
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&errb)
	root.SetArgs([]string{"--state", state, "sla", "import", path})
	err := root.ExecuteContext(context.Background())
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "nothing imported") {
		t.Fatalf("bad import: exit %d: %v", exitCode(err), err)
	}
	if _, code := run(t, state, strings.SplitN(bad, "\n", 2)[0]+"\n", "sla", "import", "--source", "nagios", "-"); code != 0 {
		t.Fatalf("good import from stdin: exit %d", code)
	}

	// A maintenance window declared in advance; the report in every format.
	if _, code := run(t, state, "", "sla", "maintenance", "add", "--vm", "web-01", "--from", "2099-01-01T00:00:00Z", "--to", "2099-01-01T01:00:00Z", "--reason", "later"); code != 0 {
		t.Fatal("maintenance add")
	}
	if out, _ := run(t, state, "", "sla", "maintenance", "list"); !strings.Contains(out, "later") {
		t.Fatalf("maintenance list: %s", out)
	}
	period := []string{"--from", "2025-06-01T00:00:00Z", "--to", "2025-06-02T00:00:00Z"}
	out, code = run(t, state, "", append([]string{"sla", "report", "--vm", "web-01", "-o", "json"}, period...)...)
	var rep struct {
		sla.Report
		Events []sla.Event `json:"events"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.VMs) != 1 || len(rep.Events) != 2 {
		t.Fatalf("report json: exit %d: %s", code, out)
	}
	if e := rep.VMs[0]; e.Downtime.String() != "4m30s" || e.Eligible.Hours() != 24 {
		t.Fatalf("report entry %+v", e)
	}
	out, code = run(t, state, "", append([]string{"sla", "report", "-o", "csv"}, period...)...)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(rows) < 3 || rows[1][0] != "vm" || rows[1][8] != "270.000" {
		t.Fatalf("report csv: exit %d, %v:\n%s", code, err, out)
	}
	out, code = run(t, state, "", append([]string{"sla", "report", "-o", "table"}, period...)...)
	for _, want := range []string{"VM web-01", "vm-failure", "#1", "host host2", "timeout-recovered"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("report table lacks %q:\n%s", want, out)
		}
	}
	if _, code := run(t, state, "", "sla", "maintenance", "remove", "1"); code != 0 {
		t.Fatal("maintenance remove")
	}
}
