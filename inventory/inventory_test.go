package inventory

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/hooks"
)

const invHosts = "hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.10.1/system'}\n"

func TestInventoryWebhooks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string // substring; empty: valid
		check   func(t *testing.T, w hooks.Webhook)
	}{
		{"full entry", `
webhooks:
  - url: https://lb.example.com/ferry
    events: [pre-migration, activation]
    timeout: 5s
    token_file: /etc/ferry/webhook.token
`, "", func(t *testing.T, w hooks.Webhook) {
			if w.Timeout != 5*time.Second || w.TokenFile != "/etc/ferry/webhook.token" || !w.Wants(hooks.PreMigration) || w.Wants(hooks.Rollback) {
				t.Fatalf("%+v", w)
			}
		}},
		{"defaults", "webhooks:\n  - url: http://127.0.0.1:9000/ferry\n", "", func(t *testing.T, w hooks.Webhook) {
			if w.TimeoutOrDefault() != hooks.DefaultWebhookTimeout {
				t.Fatalf("timeout %s", w.TimeoutOrDefault())
			}
			if got := w.Subscribed(); !reflect.DeepEqual(got, []string{hooks.Reservation, hooks.Switchover, hooks.Activation, hooks.Rollback}) {
				t.Fatalf("default events %v", got)
			}
		}},
		{"scheme", "webhooks:\n  - url: ftp://127.0.0.1/x\n", `webhook 1 (ftp://127.0.0.1/x): url scheme "ftp" is not supported: use http or https`, nil},
		{"no scheme", "webhooks:\n  - url: 127.0.0.1:9000/x\n", "webhook 1", nil},
		{"no host", "webhooks:\n  - url: 'http:///x'\n", "url has no host", nil},
		{"missing url", "webhooks:\n  - events: [activation]\n", "webhook 1 (invalid URL): url is missing", nil},
		{"unknown event", "webhooks:\n  - url: http://a/ok\n  - url: http://b/x\n    events: [activaton]\n",
			`webhook 2 (http://b/x): unknown event "activaton" (events: pre-migration, reservation, switchover, activation, rollback)`, nil},
		{"negative timeout", "webhooks:\n  - url: http://a/x\n    timeout: -1s\n", "timeout -1s must be positive", nil},
		{"timeout without unit", "webhooks:\n  - url: http://a/x\n    timeout: 5\n", "time.Duration", nil},
		{"relative token file", "webhooks:\n  - url: http://a/x\n    token_file: webhook.token\n", `token_file "webhook.token" must be an absolute path`, nil},
		{"unknown key", "webhooks:\n  - url: http://a/x\n    token: abc\n", "field token not found", nil},
		{"credentials stay out of errors", "webhooks:\n  - url: 'http://ops:hunter2@a/x?key=k3y'\n    events: [nope]\n", `webhook 1 (http://a/x): unknown event "nope"`, nil},
		{"unparsable URL stays out of errors", "webhooks:\n  - url: 'http://ops:hunter2@a b/x'\n", "webhook 1 (invalid URL): url is not a valid http(s) URL", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := Parse([]byte(invHosts + tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "k3y") {
					t.Fatalf("credentials in the error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(inv.Webhooks) != 1 {
				t.Fatalf("webhooks %+v", inv.Webhooks)
			}
			tc.check(t, inv.Webhooks[0])
		})
	}
}

// The inventory as JSON (for anything that prints or serves it) carries no
// credentials.
func TestWebhookJSONIsRedacted(t *testing.T) {
	inv := Inventory{Webhooks: []hooks.Webhook{{URL: "https://ops:hunter2@lb.example.com/ferry?key=k3y", TokenFile: "/etc/ferry/t"}}}
	b, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Contains(s, "hunter2") || strings.Contains(s, "ops") || strings.Contains(s, "k3y") || !strings.Contains(s, `"url":"https://lb.example.com/ferry"`) {
		t.Fatalf("%s", s)
	}
}

func TestInventoryLimits(t *testing.T) {
	inv, err := Parse([]byte("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1/system'}\nlimits: {max_incoming: 2, max_outgoing: 3}\n"))
	if err != nil || inv.Limits != (Limits{MaxIncoming: 2, MaxOutgoing: 3}) {
		t.Fatalf("%+v, %v", inv, err)
	}
	if _, err := Parse([]byte("limits: {max_incoming: -1}\n")); err == nil || !strings.Contains(err.Error(), "limits") {
		t.Fatalf("negative limit: %v", err)
	}
}

func TestInventoryLinkRanges(t *testing.T) {
	tests := []struct {
		link, want string
	}{
		{"link_mibps: 40, link_rtt_ms: 100", ""},
		{"link_rtt_ms: 10000", ""},
		{"link_rtt_ms: 10001", "link_rtt_ms 10001"},
		{"link_mibps: 1048577", "link_mibps 1048577"},
		{"link_rtt_ms: -5", "cannot unmarshal"},
	}
	for _, tc := range tests {
		inv, err := Parse([]byte("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1/system', " + tc.link + "}\n"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.link, err)
		case tc.want == "" && inv.Hosts[0].LinkRTTMs == 0:
			t.Errorf("%s: round trip not read: %+v", tc.link, inv.Hosts[0])
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.link, err, tc.want)
		}
	}
}
