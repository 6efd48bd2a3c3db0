package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/api"
	"github.com/ferryvm/ferry/sla"
)

// monitorState tells /healthz whether the SLA monitors still run.
type monitorState struct {
	mu      sync.Mutex
	running bool
	err     error
}

func (m *monitorState) set(running bool, err error) {
	m.mu.Lock()
	m.running, m.err = running, err
	m.mu.Unlock()
}

func (m *monitorState) healthy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.running:
		return nil
	case m.err != nil:
		return fmt.Errorf("SLA monitors stopped: %w", m.err)
	}
	return errors.New("SLA monitors not running")
}

// daemon is what `ferry serve` runs: the HTTP API and the SLA monitors,
// started and stopped together.
type daemon struct {
	log     *logrus.Entry
	api     *api.Server
	http    *http.Server
	mon     *sla.Monitor
	state   *monitorState
	targets []sla.Target

	serveErr chan error // what http.Server.Serve returned
	stopMon  context.CancelFunc
	monDone  chan struct{}
}

func (o *serveOptions) run(ctx context.Context, a *app, cmd *cobra.Command) error {
	// Our own signal channel, next to main's: the first signal (which also
	// ends ctx) starts a graceful stop, a second one rolls moves back.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	d, err := o.newDaemon(ctx, a)
	if err != nil {
		return err
	}
	ln, scheme, err := o.listener()
	if err != nil {
		return err
	}
	d.start(ctx, ln)
	defer d.stopMon()

	url := scheme + "://" + ln.Addr().String()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "ferry serve: listening on %s (/v1, /metrics, /healthz); monitoring %s; %s; SIGINT or SIGTERM stops\n",
		url, targetList(d.targets), o.agents.describe())
	d.log.WithFields(logrus.Fields{"url": url, "hosts": len(d.targets)}).Info("ferry serve started")

	signals := 0
	select {
	case <-ctx.Done():
	case s := <-sigs:
		signals++
		d.log.WithField("signal", s.String()).Info("stopping")
	case err := <-d.serveErr:
		d.stopMonitors()
		return fmt.Errorf("serving %s: %w", url, err)
	}
	if err := d.shutdown(ctx, sigs, signals, out); err != nil {
		return err
	}
	fmt.Fprintln(out, "ferry serve: stopped")
	return nil
}

// newDaemon opens what the daemon serves from (the controller, the SLA log,
// the inventory's hosts) and builds the API and the monitors, not yet running.
func (o *serveOptions) newDaemon(ctx context.Context, a *app) (*daemon, error) {
	c, err := a.controller(ctx)
	if err != nil {
		return nil, err
	}
	c.Log = c.Log.WithField("cmd", "serve")
	slaLog, err := sla.NewLog(ctx, a.j.DB())
	if err != nil {
		return nil, err
	}
	targets, err := slaTargets(c.Inventory, nil)
	if err != nil {
		return nil, err
	}
	log := logrus.NewEntry(a.log).WithField("cmd", "serve")

	metrics := sla.NewMetrics()
	mon := o.agents.monitor(slaLog, targets)
	mon.Metrics = metrics
	mon.OnEvent = logSLAEvent(log)
	mon.OnError = func(err error) { log.WithError(err).Warn("sla monitor") }
	state := &monitorState{}

	srv, err := api.New(api.Config{Controller: c, SLA: slaLog, Metrics: metrics, Token: o.token, Log: log, MonitorsHealthy: state.healthy})
	if err != nil {
		return nil, err
	}
	return &daemon{log: log, api: srv, http: newHTTPServer(srv.Handler(), log), mon: mon, state: state, targets: targets}, nil
}

// logSLAEvent logs each event the monitors record, with only the fields it has.
func logSLAEvent(log *logrus.Entry) func(sla.Event) {
	return func(e sla.Event) {
		f := logrus.Fields{"kind": e.Kind, "host": e.Host, "source": e.Source}
		if e.VMName != "" {
			f["vm"] = e.VMName
		}
		if e.CorrelationID != "" {
			f["migration"] = e.CorrelationID
		}
		if e.Detail != "" {
			f["detail"] = e.Detail
		}
		log.WithFields(f).Info("sla event")
	}
}

func newHTTPServer(h http.Handler, log *logrus.Entry) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		// net/http's own complaints (TLS handshakes, bad requests) as warnings.
		ErrorLog: stdlog.New(log.WriterLevel(logrus.WarnLevel), "", 0),
	}
}

// start serves ln and runs the monitors. The monitors' context outlives
// ctx: they must record the events of the moves that finish after a signal.
func (d *daemon) start(ctx context.Context, ln net.Listener) {
	d.serveErr = make(chan error, 1)
	go func() { d.serveErr <- d.http.Serve(ln) }()

	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	d.stopMon = stopMon
	d.monDone = make(chan struct{})
	d.state.set(true, nil)
	go func() {
		defer close(d.monDone)
		err := d.mon.Run(monCtx)
		d.state.set(false, err)
		if err != nil {
			d.log.WithError(err).Error("sla monitors stopped")
		}
	}()
}

// stopMonitors stops the monitors and waits for them to end.
func (d *daemon) stopMonitors() {
	d.stopMon()
	<-d.monDone
}

// shutdown stops the daemon after the first signal; signals counts those
// already received, so that one more rolls the moves in flight back.
func (d *daemon) shutdown(ctx context.Context, sigs <-chan os.Signal, signals int, out io.Writer) error {
	// 1. Stop accepting; requests under way get a few seconds.
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if err := d.http.Shutdown(shCtx); err != nil {
		d.log.WithError(err).Warn("closing the listener")
	}
	cancel()
	// 2. Drains stop starting moves; wait for the moves in flight, unless a
	// second signal asks to roll them back.
	err := d.waitInFlight(ctx, sigs, signals, out)
	// 3. The monitors go last, so they record the moves' last events.
	d.stopMonitors()
	return err
}

// waitInFlight waits for the API's migrations and drains to end. A second
// signal aborts them; then it waits the time a rollback takes.
func (d *daemon) waitInFlight(ctx context.Context, sigs <-chan os.Signal, signals int, out io.Writer) error {
	moves, drains := d.api.InFlight()
	if moves+drains > 0 {
		fmt.Fprintf(out, "ferry serve: stopping; waiting for %d migration(s) and %d drain(s) in flight (signal again to roll them back)\n", moves, drains)
	}
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	go d.abortOnSignal(waitCtx, stopWait, sigs, signals)
	err := d.api.Shutdown(waitCtx)
	stopWait()
	if err == nil {
		return nil
	}
	// Aborted: the moves roll back; give them the time a rollback takes.
	rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := d.api.Shutdown(rbCtx); err != nil {
		return fmt.Errorf("exiting with work in flight (run `ferry recover`): %w", err)
	}
	return nil
}

// abortOnSignal aborts the API's work at the second signal, counting the
// signals already received, and then ends the wait; it returns when the wait
// ends first.
func (d *daemon) abortOnSignal(wait context.Context, stopWait context.CancelFunc, sigs <-chan os.Signal, signals int) {
	for {
		select {
		case s := <-sigs:
			// The first signal may reach this channel only now.
			if signals++; signals >= 2 {
				d.log.WithField("signal", s.String()).Warn("second signal: rolling back the migrations in flight")
				d.api.Abort()
				stopWait()
				return
			}
		case <-wait.Done():
			return
		}
	}
}

// listener opens the listening socket, with TLS when configured.
func (o *serveOptions) listener() (net.Listener, string, error) {
	var cfg *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, "", usagef("--tls-cert/--tls-key: %v", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, "", fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	if cfg != nil {
		return tls.NewListener(ln, cfg), "https", nil
	}
	return ln, "http", nil
}
