package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
)

// DefaultMaxBodyBytes bounds a request body: the largest legitimate one (a
// drain with a long target list) is a few hundred bytes.
const DefaultMaxBodyBytes = 64 << 10

// LiveOptions are the live-migration options of POST /v1/migrations and of
// the live moves of a drain. Durations are Go durations: "300ms", "2m".
type LiveOptions struct {
	MaxDowntime        string `json:"max_downtime,omitempty"`
	MaxDowntimeCeiling string `json:"max_downtime_ceiling,omitempty"`
	BandwidthMiBps     uint64 `json:"bandwidth_mibps,omitempty"`
	AllowPostcopy      bool   `json:"allow_postcopy,omitempty"`
	CompletionTimeout  string `json:"completion_timeout,omitempty"`
	OnTimeout          string `json:"on_timeout,omitempty"`
	Timeout            string `json:"timeout,omitempty"`
	CopyStorage        bool   `json:"copy_storage,omitempty"`
}

// MigrationRequest is the body of POST /v1/migrations.
type MigrationRequest struct {
	VM string `json:"vm"`
	// To is an inventory host name, or "auto" to let placement choose.
	To   string `json:"to"`
	From string `json:"from,omitempty"`
	Cold bool   `json:"cold,omitempty"`
	LiveOptions
	// Cold moves only.
	ToPool          string `json:"to_pool,omitempty"`
	KeepSource      bool   `json:"keep_source,omitempty"`
	Start           bool   `json:"start,omitempty"`
	Shutdown        bool   `json:"shutdown,omitempty"`
	ShutdownTimeout string `json:"shutdown_timeout,omitempty"`
	Force           bool   `json:"force,omitempty"`
	// "to": "auto" only: "key=value" labels.
	AvoidLabels  []string `json:"avoid_labels,omitempty"`
	PreferLabels []string `json:"prefer_labels,omitempty"`
}

// DrainRequest is the body of POST /v1/hosts/{host}/drain (every field optional).
type DrainRequest struct {
	Parallel     int    `json:"parallel,omitempty"`
	MaxPerTarget int    `json:"max_per_target,omitempty"`
	Order        string `json:"order,omitempty"`
	RunningOnly  bool   `json:"running_only,omitempty"`
	DryRun       bool   `json:"dry_run,omitempty"`
	// Retries after a failed move (absent: drain.DefaultRetries).
	Retries      *int     `json:"retries,omitempty"`
	Backoff      string   `json:"backoff,omitempty"`
	Targets      []string `json:"targets,omitempty"`
	AvoidLabels  []string `json:"avoid_labels,omitempty"`
	PreferLabels []string `json:"prefer_labels,omitempty"`
	Reason       string   `json:"reason,omitempty"`
	LiveOptions
}

func invalid(format string, args ...any) *Error {
	return apiErr(http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...))
}

// decodeBody reads one JSON object into dst: at most limit bytes, no
// unknown fields, nothing after it. An empty body is allowed when
// allowEmpty (dst keeps its zero value).
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, dst any, allowEmpty bool) error {
	// curl -d labels its body form-urlencoded; take it as the JSON it
	// usually is rather than make every example carry a header. Other
	// types are refused.
	form := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err == nil && mt == "application/json":
		case err == nil && mt == "application/x-www-form-urlencoded":
			form = true
		default:
			return apiErr(http.StatusUnsupportedMediaType, "unsupported_media_type",
				fmt.Sprintf("Content-Type %q: send the request body as application/json", ct))
		}
	}
	err := decodeJSON(w, r, limit, dst, allowEmpty)
	if err != nil && form {
		if e, ok := err.(*Error); ok && e.Code == "invalid_request" {
			e.Message += " (the body must be JSON, not form fields)"
		}
	}
	return err
}

func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any, allowEmpty bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if errors.Is(err, io.EOF) {
		if allowEmpty {
			return nil
		}
		return invalid("empty request body: send a JSON object, e.g. %s", example(dst))
	}
	if err == nil {
		// One object only: trailing data is likely a client bug.
		if dec.More() {
			return invalid("the request body has data after the JSON object")
		}
		var extra json.RawMessage
		if derr := dec.Decode(&extra); !errors.Is(derr, io.EOF) {
			return invalid("the request body has data after the JSON object")
		}
		return nil
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return apiErr(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body over %d bytes", mbe.Limit))
	case errors.As(err, &se):
		return invalid("malformed JSON at byte %d: %v", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		if te.Field == "" {
			return invalid("the request body must be a JSON object, e.g. %s", example(dst))
		}
		// Fields of embedded structs come as "LiveOptions.timeout"; the
		// client only knows the JSON name.
		field := te.Field[strings.LastIndexByte(te.Field, '.')+1:]
		return invalid("field %q: want a JSON %s, got %s", field, jsonKind(te.Type), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return invalid("unknown field %s in the request body; accepted fields: %s", field, strings.Join(fieldNames(dst), ", "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("the request body ends in the middle of the JSON object")
	}
	return invalid("reading the request body: %v", err)
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array of " + jsonKind(t.Elem()) + "s"
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Uint, reflect.Float64:
		return "number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return t.String()
}

// fieldNames lists the JSON fields of a request struct, embedded ones included.
func fieldNames(v any) []string {
	var out []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				out = append(out, name)
			}
		}
	}
	walk(reflect.TypeOf(v))
	sort.Strings(out)
	return out
}

func example(dst any) string {
	switch dst.(type) {
	case *MigrationRequest:
		return `{"vm": "web-01", "to": "host2"}`
	case *DrainRequest:
		return `{"parallel": 2}`
	}
	return "{}"
}

// parseDur reads an optional duration field ("" and "0" are zero) and
// checks it against its range.
func parseDur(field, v string, rng orchestrator.DurationRange) (time.Duration, error) {
	if v == "" || v == "0" {
		return 0, inRange(rng.Check(field, 0))
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, invalid("%s %q: give a duration such as \"300ms\", \"2s\" or \"10m\"", field, v)
	}
	if d < 0 {
		return 0, invalid("%s %q must not be negative", field, v)
	}
	return d, inRange(rng.Check(field, d))
}

// inRange turns an orchestrator range error into the API's 400.
func inRange(err error) error {
	if err == nil {
		return nil
	}
	return invalid("%v", err)
}

// validVM accepts a VM name or UUID.
func validVM(field, s string) error {
	if s == "" {
		return invalid("%s is required: a VM name or UUID", field)
	}
	if !inventory.ValidName(s) {
		if _, err := uuid.Parse(s); err != nil {
			return invalid("%s %q is not a valid VM name (letters, digits, '.', '_', '-', at most 64) nor a UUID", field, s)
		}
	}
	return nil
}

// inventoryHost checks that s names an inventory host. The API takes names
// only, never libvirt URIs: a client must not make ferry dial arbitrary
// addresses.
func inventoryHost(inv *inventory.Inventory, field, s string) error {
	if !inventory.ValidName(s) {
		return invalid("%s %q is not a valid host name (letters, digits, '.', '_', '-', at most 64); the API takes inventory names, not libvirt URIs", field, s)
	}
	if inv != nil {
		for _, h := range inv.Hosts {
			if h.Name == s {
				return nil
			}
		}
	}
	known := "the inventory is empty"
	if inv != nil && len(inv.Hosts) > 0 {
		known = "known hosts: " + strings.Join(inv.Names(), ", ")
	}
	return apiErr(http.StatusNotFound, "unknown_host", fmt.Sprintf("%s: unknown host %q (%s)", field, s, known))
}

func parseLabels(field string, in []string) ([]placement.Label, error) {
	var out []placement.Label
	for _, s := range in {
		l, err := placement.ParseLabel(s)
		if err != nil {
			return nil, invalid("%s: %v", field, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// live turns the live options into the orchestrator's (the bandwidth cap,
// common to every kind, is the request's own field).
func (o LiveOptions) live() (orchestrator.LiveOptions, error) {
	var r orchestrator.LiveOptions
	var err error
	if r.MaxDowntime, err = parseDur("max_downtime", o.MaxDowntime, orchestrator.RangeMaxDowntime); err != nil {
		return r, err
	}
	if o.MaxDowntime != "" && r.MaxDowntime == 0 {
		return r, invalid("max_downtime must be more than 0")
	}
	if r.DowntimeCeiling, err = parseDur("max_downtime_ceiling", o.MaxDowntimeCeiling, orchestrator.RangeDowntimeCeiling); err != nil {
		return r, err
	}
	if r.DowntimeCeiling > 0 && r.MaxDowntime > 0 && r.DowntimeCeiling < r.MaxDowntime {
		return r, invalid("max_downtime_ceiling %s is below max_downtime %s", o.MaxDowntimeCeiling, o.MaxDowntime)
	}
	if r.CompletionTimeout, err = parseDur("completion_timeout", o.CompletionTimeout, orchestrator.RangeCompletionTimeout); err != nil {
		return r, err
	}
	if r.Timeout, err = parseDur("timeout", o.Timeout, orchestrator.RangeTimeout); err != nil {
		return r, err
	}
	if err := inRange(orchestrator.RangeBandwidthMiBps.CheckUint("bandwidth_mibps", o.BandwidthMiBps)); err != nil {
		return r, err
	}
	switch o.OnTimeout {
	case "", "abort", "pause":
	case "postcopy":
		if !o.AllowPostcopy {
			return r, invalid("on_timeout \"postcopy\" needs allow_postcopy: true")
		}
	default:
		return r, invalid("on_timeout %q: use abort, postcopy or pause", o.OnTimeout)
	}
	r.OnTimeout, r.AllowPostcopy, r.CopyStorage = o.OnTimeout, o.AllowPostcopy, o.CopyStorage
	return r, nil
}

// liveOnly names the live options set in o, for refusing them on cold moves.
func (o LiveOptions) liveOnly() []string {
	var set []string
	for name, on := range map[string]bool{
		"max_downtime": o.MaxDowntime != "", "max_downtime_ceiling": o.MaxDowntimeCeiling != "",
		"allow_postcopy": o.AllowPostcopy, "completion_timeout": o.CompletionTimeout != "",
		"on_timeout": o.OnTimeout != "", "timeout": o.Timeout != "", "copy_storage": o.CopyStorage,
	} {
		if on {
			set = append(set, name)
		}
	}
	sort.Strings(set)
	return set
}

// plan is a validated migration request.
type plan struct {
	auto  bool
	place placement.Options
	req   orchestrator.Request
}

// validate checks a migration request against the inventory and builds the
// orchestrator's request. Names are checked here so that a bad one never
// reaches a log line or a libvirt call.
func (m *MigrationRequest) validate(inv *inventory.Inventory) (*plan, error) {
	if err := validVM("vm", m.VM); err != nil {
		return nil, err
	}
	p := &plan{}
	switch m.To {
	case "":
		return nil, invalid("to is required: an inventory host name, or \"auto\" to let ferry choose")
	case "auto":
		p.auto = true
	default:
		if err := inventoryHost(inv, "to", m.To); err != nil {
			return nil, err
		}
	}
	if m.From != "" {
		if err := inventoryHost(inv, "from", m.From); err != nil {
			return nil, err
		}
		if m.From == m.To {
			return nil, apiErr(http.StatusConflict, "same_host", fmt.Sprintf("from and to are both %s: nothing to migrate", m.To))
		}
	}
	var err error
	if p.place.Avoid, err = parseLabels("avoid_labels", m.AvoidLabels); err != nil {
		return nil, err
	}
	if p.place.Prefer, err = parseLabels("prefer_labels", m.PreferLabels); err != nil {
		return nil, err
	}
	if !p.auto && len(m.AvoidLabels)+len(m.PreferLabels) > 0 {
		return nil, invalid("avoid_labels and prefer_labels steer placement: they go with \"to\": \"auto\"")
	}
	if m.Cold {
		if set := m.liveOnly(); len(set) > 0 {
			return nil, invalid("%s: live-migration options; a cold move takes to_pool, keep_source, start, shutdown, shutdown_timeout, force, bandwidth_mibps", strings.Join(set, ", "))
		}
		if (m.ShutdownTimeout != "" || m.Force) && !m.Shutdown {
			return nil, invalid("shutdown_timeout and force go with shutdown: true")
		}
		if err := inRange(orchestrator.RangeBandwidthMiBps.CheckUint("bandwidth_mibps", m.BandwidthMiBps)); err != nil {
			return nil, err
		}
		st, err := parseDur("shutdown_timeout", m.ShutdownTimeout, orchestrator.RangeShutdownTimeout)
		if err != nil {
			return nil, err
		}
		if m.ToPool != "" && !inventory.ValidName(m.ToPool) {
			return nil, invalid("to_pool %q is not a valid pool name", m.ToPool)
		}
		p.req = orchestrator.Request{Kind: orchestrator.KindCold, VM: m.VM, To: m.To, From: m.From, BandwidthMiBps: m.BandwidthMiBps,
			Cold: orchestrator.ColdOptions{ToPool: m.ToPool, KeepSource: m.KeepSource, Start: m.Start, Shutdown: m.Shutdown, ShutdownTimeout: st, Force: m.Force}}
		return p, nil
	}
	var set []string
	for name, on := range map[string]bool{"to_pool": m.ToPool != "", "keep_source": m.KeepSource, "start": m.Start,
		"shutdown": m.Shutdown, "shutdown_timeout": m.ShutdownTimeout != "", "force": m.Force} {
		if on {
			set = append(set, name)
		}
	}
	if len(set) > 0 {
		sort.Strings(set)
		return nil, invalid("%s: options of cold moves; add \"cold\": true", strings.Join(set, ", "))
	}
	live, err := m.live()
	if err != nil {
		return nil, err
	}
	p.req = orchestrator.Request{Kind: orchestrator.KindLive, VM: m.VM, To: m.To, From: m.From, BandwidthMiBps: m.BandwidthMiBps, Live: live}
	return p, nil
}

// maxReason bounds a drain's free-text reason (it goes into the maintenance mark).
const maxReason = 200

// validate checks a drain request and builds the orchestrator's.
func (d *DrainRequest) validate(inv *inventory.Inventory, host string) (drain.Request, error) {
	req := drain.Request{Host: host, Parallel: d.Parallel, MaxPerTarget: d.MaxPerTarget, Order: d.Order,
		RunningOnly: d.RunningOnly, DryRun: d.DryRun, Retries: drain.DefaultRetries}
	if err := inventoryHost(inv, "host", host); err != nil {
		return req, err
	}
	if err := inRange(drain.RangeParallel.Check("parallel", int64(d.Parallel))); err != nil {
		return req, err
	}
	if err := inRange(drain.RangeMaxPerTarget.Check("max_per_target", int64(d.MaxPerTarget))); err != nil {
		return req, err
	}
	switch d.Order {
	case "", "smallest", "largest", "name":
	default:
		return req, invalid("order %q: use smallest, largest or name", d.Order)
	}
	if d.Retries != nil {
		if err := inRange(drain.RangeRetries.Check("retries", int64(*d.Retries))); err != nil {
			return req, err
		}
		req.Retries = *d.Retries
	}
	var err error
	if req.Backoff, err = parseDur("backoff", d.Backoff, drain.RangeBackoff); err != nil {
		return req, err
	}
	for _, t := range d.Targets {
		if err := inventoryHost(inv, "targets", t); err != nil {
			return req, err
		}
		if t == host {
			return req, invalid("targets: %s is the host being drained", t)
		}
	}
	req.Targets = d.Targets
	if req.Place.Avoid, err = parseLabels("avoid_labels", d.AvoidLabels); err != nil {
		return req, err
	}
	if req.Place.Prefer, err = parseLabels("prefer_labels", d.PreferLabels); err != nil {
		return req, err
	}
	if len(d.Reason) > maxReason || strings.ContainsFunc(d.Reason, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return req, invalid("reason: at most %d characters, no control characters", maxReason)
	}
	req.Reason = d.Reason
	if req.Live, err = d.live(); err != nil {
		return req, err
	}
	req.BandwidthMiBps = d.BandwidthMiBps
	return req, nil
}
