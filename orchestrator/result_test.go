package orchestrator

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/coldmove"
)

// A result is one object: the common fields, then its kind's, and it reads
// back into the same parts.
func TestResultJSON(t *testing.T) {
	live := &Result{ID: "a", Kind: KindLive, VM: "web", State: "completed", Live: &LiveResult{DowntimeMS: 42, DataSent: 7, Postcopy: true}}
	cold := &Result{ID: "b", Kind: KindCold, VM: "db", State: "completed", Cold: &ColdResult{SentBytes: 9, StartedOnDest: true,
		Artifacts: []coldmove.Artifact{{Kind: coldmove.KindDisk, SrcPath: "/p/db.qcow2"}}}}
	for _, tt := range []struct {
		r    *Result
		want []string
	}{
		{live, []string{`"kind":"live"`, `"downtime_ms":42`, `"data_sent_bytes":7`, `"postcopy":true`}},
		{cold, []string{`"kind":"cold"`, `"sent_bytes":9`, `"started":true`, `"artifacts":[`}},
	} {
		b, err := json.Marshal(tt.r)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, w := range tt.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s lacks %s", s, w)
			}
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || strings.Count(s, `"id":`) != 1 {
			t.Fatalf("not one object: %s (%v)", s, err)
		}
		var back Result
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		switch {
		case tt.r.Live != nil && (back.Live == nil || back.Cold != nil || back.Live.DowntimeMS != 42):
			t.Errorf("live read back as %+v", back)
		case tt.r.Cold != nil && (back.Cold == nil || back.Live != nil || !back.Cold.StartedOnDest || len(back.Cold.Artifacts) != 1):
			t.Errorf("cold read back as %+v", back)
		}
	}
}

// Progress carries its message once, whatever the kind.
func TestProgressJSONHasOneMessage(t *testing.T) {
	p := Progress{ID: "b", Kind: KindCold, Message: "copying disk vda", Cold: &ColdProgress{Progress: coldmove.Progress{Step: "copy", Message: "copying disk vda", MoveTotalBytes: 10}}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"message"`); n != 1 || !strings.Contains(string(b), `"move_total_bytes":10`) {
		t.Fatalf("%s: %d messages", b, n)
	}
}
