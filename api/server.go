package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

// Config is what a Server needs. Controller (with its Journal and
// Inventory) and Token are required.
type Config struct {
	Controller *orchestrator.Controller
	// SLA is the SLA log for /v1/sla/report (nil: that endpoint answers 503).
	SLA *sla.Log
	// Metrics are the SLA monitor's; the API's own counters are added to its
	// registry so /metrics serves both. Nil: the API counters alone.
	Metrics *sla.Metrics
	// Token is the bearer token every request but /healthz must present.
	Token string
	Log   *logrus.Entry
	// MonitorsHealthy reports whether the SLA monitors run (nil error);
	// /healthz includes it. Nil: not checked.
	MonitorsHealthy func() error
	// MaxBodyBytes bounds request bodies (0: DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Retain is how many finished migrations and drains stay in memory with
	// their full result (0: 256); older ones are read from the journal.
	Retain int
	Now    func() time.Time
}

// Server is ferry's HTTP API. Create it with New, serve Handler, and call
// Shutdown before the process exits.
type Server struct {
	cfg     Config
	ctl     *orchestrator.Controller
	log     *logrus.Entry
	tokenH  [sha256.Size]byte
	handler http.Handler
	metrics *apiMetrics

	// Moves run under movesCtx (cancelled by Abort: roll back); drains under
	// drainsCtx (cancelled by Shutdown: no new moves).
	movesCtx     context.Context
	abortMoves   context.CancelFunc
	drainsCtx    context.Context
	cancelDrains context.CancelFunc
	wg           sync.WaitGroup

	mu       sync.Mutex
	closing  bool
	moves    map[string]*move     // by migration id
	active   map[string]*move     // running moves by VM name and UUID
	drains   map[string]*drainJob // by drain id
	draining map[string]*drainJob // running drains by host
	finished []string             // ids of finished moves and drains, oldest first
}

// New checks the configuration and returns a server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Controller == nil || cfg.Controller.Journal == nil || cfg.Controller.Inventory == nil:
		return nil, errors.New("api: a controller with a journal and an inventory is required")
	case cfg.Token == "":
		return nil, errors.New("api: an API token is required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, ctl: cfg.Controller, log: cfg.Log, tokenH: sha256.Sum256([]byte(cfg.Token)),
		moves: map[string]*move{}, active: map[string]*move{}, drains: map[string]*drainJob{}, draining: map[string]*drainJob{}}
	s.movesCtx, s.abortMoves = context.WithCancel(context.Background())
	s.drainsCtx, s.cancelDrains = context.WithCancel(context.Background())
	var reg *prometheus.Registry
	if cfg.Metrics != nil {
		reg = cfg.Metrics.Registry()
	} else {
		reg = prometheus.NewRegistry()
	}
	var err error
	if s.metrics, err = newAPIMetrics(reg, s); err != nil {
		return nil, err
	}
	s.handler = s.routes(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s, nil
}

// Handler serves the API.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes(metrics http.Handler) http.Handler {
	authed := http.NewServeMux()
	authed.HandleFunc("/v1/migrations", s.migrations)
	authed.HandleFunc("/v1/migrations/{id}", s.migration)
	authed.HandleFunc("/v1/hosts/{host}/drain", s.drainHost)
	authed.HandleFunc("/v1/drains/{id}", s.drain)
	authed.HandleFunc("/v1/sla/report", s.slaReport)
	authed.Handle("/metrics", methods(metrics.ServeHTTP, http.MethodGet))
	authed.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, apiErr(http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s; see the README's \"ferry serve\" section", r.URL.Path)))
	})
	top := http.NewServeMux()
	// Health is open: load balancers and systemd probes carry no token, and
	// it says nothing beyond "up or not".
	top.HandleFunc("/healthz", s.healthz)
	top.Handle("/", s.auth(authed))
	return s.observe(top)
}

// methods answers 405 (as JSON, with Allow) for other methods.
func methods(h http.HandlerFunc, allowed ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allowed {
			if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
				h(w, r)
				return
			}
		}
		methodNotAllowed(w, r, allowed...)
	}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed ...string) {
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, r, apiErr(http.StatusMethodNotAllowed, "method_not_allowed",
		fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))))
}

// auth checks the bearer token in constant time (over the hashes, so the
// token's length does not leak either).
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			writeError(w, r, apiErr(http.StatusUnauthorized, "unauthorized",
				"missing bearer token: send Authorization: Bearer <token> (the token ferry serve was started with)"))
			return
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(got[:], s.tokenH[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry", error="invalid_token"`)
			writeError(w, r, apiErr(http.StatusUnauthorized, "unauthorized", "invalid bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// reqNotes collects fields for the request's log line (migration id, vm,
// error) from the handlers.
type reqNotes struct {
	mu     sync.Mutex
	fields logrus.Fields
}

type notesKey struct{}

// note adds a field to the request's log line.
func note(r *http.Request, k string, v any) {
	if n, ok := r.Context().Value(notesKey{}).(*reqNotes); ok {
		n.mu.Lock()
		n.fields[k] = v
		n.mu.Unlock()
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// RequestIDHeader carries the id of every request in its answer; the
// server's log lines of the request carry it as request_id.
const RequestIDHeader = "X-Request-Id"

// observe logs every request (never its headers: they carry the token) and
// counts it. A panicking handler is answered 500 and logged with the stack;
// the server goes on serving.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// Ours, never the client's: a log line must not carry what a client chose.
		rid := uuid.NewString()
		w.Header().Set(RequestIDHeader, rid)
		n := &reqNotes{fields: logrus.Fields{}}
		r = r.WithContext(context.WithValue(r.Context(), notesKey{}, n))
		sw := &statusWriter{ResponseWriter: w}
		s.serveRecovering(sw, r, next, rid)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		n.mu.Lock()
		f := logrus.Fields{"method": r.Method, "path": r.URL.Path, "status": sw.status, "remote": r.RemoteAddr,
			"duration_ms": time.Since(start).Milliseconds(), "request_id": rid}
		for k, v := range n.fields {
			f[k] = v
		}
		n.mu.Unlock()
		e := s.log.WithFields(f)
		// Reads that succeed are polled by clients and scrapers: debug.
		// Changes and refusals are what an operator looks for: info.
		switch {
		case sw.status >= 500:
			e.Warn("api request failed")
		case (r.Method == http.MethodGet || r.Method == http.MethodHead) && sw.status < 400:
			e.Debug("api request")
		default:
			e.Info("api request")
		}
		s.metrics.requests.WithLabelValues(r.Method, routeOf(r.URL.Path), strconv.Itoa(sw.status)).Inc()
	})
}

// serveRecovering runs next, turning a panic into a 500 answer (when
// nothing was written yet) and an error log line with the stack.
func (s *Server) serveRecovering(w *statusWriter, r *http.Request, next http.Handler, rid string) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler { // net/http's way to abort a response on purpose
			panic(p)
		}
		s.log.WithFields(logrus.Fields{"request_id": rid, "method": r.Method, "path": r.URL.Path,
			"panic": fmt.Sprint(p), "stack": string(debug.Stack())}).Error("api handler panicked")
		if w.status == 0 {
			e := apiErr(http.StatusInternalServerError, "internal", "internal error: the server logged it with request id "+rid)
			e.RequestID = rid
			writeError(w, r, e)
		}
	}()
	next.ServeHTTP(w, r)
}

// routeOf maps a path to its route for the metrics label (ids would make
// one series per migration).
func routeOf(p string) string {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case p == "/healthz" || p == "/metrics" || p == "/v1/migrations" || p == "/v1/sla/report":
		return p
	case len(parts) == 3 && parts[0] == "v1" && parts[1] == "migrations":
		return "/v1/migrations/{id}"
	case len(parts) == 3 && parts[0] == "v1" && parts[1] == "drains":
		return "/v1/drains/{id}"
	case len(parts) == 4 && parts[0] == "v1" && parts[1] == "hosts" && parts[3] == "drain":
		return "/v1/hosts/{host}/drain"
	}
	return "other"
}

// idRE is what a migration or drain id (or an id prefix) may look like: no
// SQL LIKE wildcards, nothing to inject into a log line.
var idRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

func pathID(r *http.Request, what string) (string, error) {
	id := r.PathValue("id")
	if !idRE.MatchString(id) {
		return "", invalid("%s id %q: letters, digits and '-' only (a UUID or its first characters)", what, id)
	}
	return id, nil
}

// starting refuses new work while shutting down; otherwise it counts the
// work in the wait group.
func (s *Server) starting() error {
	if s.closing {
		return apiErr(http.StatusServiceUnavailable, "shutting_down", "ferry serve is shutting down and starts nothing new")
	}
	s.wg.Add(1)
	return nil
}

// Shutdown stops starting work, cancels the drains (they start no new
// moves; their moves in flight finish) and waits for every migration and
// drain this server runs to end, or for ctx. Stop the HTTP server first so
// no request races it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.cancelDrains()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d migration(s) and %d drain(s) still in flight: %w", s.inFlightMoves(), s.inFlightDrains(), ctx.Err())
	}
}

// Abort cancels every migration in flight (they roll back unless past
// commitment) and the drains' moves with them. Shutdown still waits for them.
func (s *Server) Abort() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.cancelDrains()
	s.abortMoves()
}

// InFlight counts the migrations and drains running in this server.
func (s *Server) InFlight() (migrations, drains int) { return s.inFlightMoves(), s.inFlightDrains() }

func (s *Server) inFlightMoves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.moves {
		if !m.isDone() {
			n++
		}
	}
	return n
}

func (s *Server) inFlightDrains() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.draining)
}

// retire remembers a finished id and forgets the oldest beyond Retain; mu is held.
func (s *Server) retire(id string) {
	s.finished = append(s.finished, id)
	for len(s.finished) > s.cfg.Retain {
		old := s.finished[0]
		s.finished = s.finished[1:]
		delete(s.moves, old)
		delete(s.drains, old)
	}
}
