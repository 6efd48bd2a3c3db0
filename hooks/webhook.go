package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultWebhookTimeout bounds one webhook call.
const DefaultWebhookTimeout = 10 * time.Second

// Webhook is one `webhooks:` entry of the inventory: ferry POSTs the
// payload (Payload) to URL for each of Events.
type Webhook struct {
	URL string `yaml:"url"`
	// Events to send; empty: every event except pre-migration. A webhook
	// listing pre-migration is a gate: a non-2xx answer, a timeout or a
	// connection error refuses the move.
	Events  []string      `yaml:"events,omitempty"`
	Timeout time.Duration `yaml:"timeout,omitempty"` // 0: DefaultWebhookTimeout
	// TokenFile holds a bearer token, read at each call (so it can be
	// rotated) and sent as Authorization: Bearer; never logged.
	TokenFile string `yaml:"token_file,omitempty"`
}

// MarshalJSON shows the entry without the secrets a URL may carry, for
// anything that prints or serves the inventory.
func (w Webhook) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		URL       string   `json:"url"`
		Events    []string `json:"events"`
		Timeout   string   `json:"timeout"`
		TokenFile string   `json:"token_file,omitempty"`
	}{w.Name(), w.Subscribed(), w.TimeoutOrDefault().String(), w.TokenFile})
}

// Name is the URL as ferry logs and reports it: without userinfo, query
// and fragment, which is where credentials hide.
func (w Webhook) Name() string {
	u, err := url.Parse(w.URL)
	if err != nil || u.Host == "" {
		return "invalid URL"
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	r := *u
	r.User, r.RawQuery, r.ForceQuery, r.Fragment, r.RawFragment = nil, "", false, "", ""
	return r.String()
}

func (w Webhook) TimeoutOrDefault() time.Duration {
	if w.Timeout > 0 {
		return w.Timeout
	}
	return DefaultWebhookTimeout
}

// Subscribed is the effective subscription: Events, or every event but pre-migration.
func (w Webhook) Subscribed() []string {
	if len(w.Events) > 0 {
		return w.Events
	}
	var out []string
	for _, e := range Events {
		if e != PreMigration {
			out = append(out, e)
		}
	}
	return out
}

func (w Webhook) Wants(event string) bool {
	for _, e := range w.Subscribed() {
		if e == event {
			return true
		}
	}
	return false
}

// Validate checks an entry when the inventory is loaded, so a typo fails
// `ferry` at once rather than silently dropping a load balancer's update.
func (w Webhook) Validate() error {
	if w.URL == "" {
		return errors.New("url is missing")
	}
	u, err := url.Parse(w.URL)
	if err != nil {
		// url.Error repeats the URL, credentials included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("url is not a valid http(s) URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url scheme %q is not supported: use http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("url has no host")
	}
	for _, e := range w.Events {
		if !knownEvent(e) {
			return fmt.Errorf("unknown event %q (events: %s)", e, strings.Join(Events, ", "))
		}
	}
	if w.Timeout < 0 {
		return fmt.Errorf("timeout %s must be positive", w.Timeout)
	}
	if w.TokenFile != "" && !filepath.IsAbs(w.TokenFile) {
		return fmt.Errorf("token_file %q must be an absolute path", w.TokenFile)
	}
	return nil
}

// webhookClient follows no redirects: a 3xx counts as a failure, so a POST
// is never turned into a GET nor sent, token and all, somewhere else.
var webhookClient = &http.Client{
	Transport:     http.DefaultTransport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// callWebhook POSTs the payload; nil means a 2xx answer.
func (w Webhook) call(ctx context.Context, log *logrus.Entry, event string, body []byte) *Failure {
	name := w.Name()
	timeout := w.TimeoutOrDefault()
	f := &Failure{Event: event, What: "webhook " + name}
	l := log.WithFields(logrus.Fields{"webhook": name, "event": event})
	start := time.Now()
	fail := func(msg, output string) *Failure {
		f.Err, f.Output = scrubURL(msg, w.URL), scrubURL(output, w.URL)
		l.WithFields(logrus.Fields{"error": f.Err, "output": f.Output, "ms": time.Since(start).Milliseconds()}).Warn("webhook failed")
		return f
	}
	var token string
	if w.TokenFile != "" {
		b, err := os.ReadFile(w.TokenFile)
		if err != nil {
			return fail(fmt.Sprintf("reading token_file: %v", err), "")
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fail(fmt.Sprintf("token_file %s is empty", w.TokenFile), "")
		}
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(hctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fail("building the request failed", "")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ferry")
	req.Header.Set("X-Ferry-Event", event)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := webhookClient.Do(req)
	if err != nil {
		switch {
		case errors.Is(hctx.Err(), context.DeadlineExceeded):
			return fail(fmt.Sprintf("timed out after %s", timeout), "")
		case ctx.Err() != nil:
			return fail("cancelled: "+ctx.Err().Error(), "")
		}
		// Go's url.Error names the URL; the entry's name already says which.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fail(err.Error(), "")
	}
	defer resp.Body.Close()
	out, rerr := io.ReadAll(io.LimitReader(resp.Body, outputLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fail("HTTP "+resp.Status, lastLine(string(out)))
	}
	if rerr != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
		// The receiver answered 2xx: it took the event, even if the rest of
		// its body came too late.
		l.WithError(rerr).Debug("webhook body not read in time")
	}
	l.WithFields(logrus.Fields{"status": resp.StatusCode, "ms": time.Since(start).Milliseconds()}).Info("webhook called")
	return nil
}

// scrubURL removes the raw URL and its password from a message should an
// error of the HTTP stack quote them.
func scrubURL(msg, raw string) string {
	if msg == "" || raw == "" {
		return msg
	}
	u, err := url.Parse(raw)
	if err != nil {
		return strings.ReplaceAll(msg, raw, "(webhook URL)")
	}
	msg = strings.ReplaceAll(msg, raw, redactURL(u))
	if u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
