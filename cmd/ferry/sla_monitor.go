package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/sla"
)

type slaMonitorOptions struct {
	hosts       []string
	agents      slaAgentOptions
	metricsAddr string
}

func newSLAMonitorCmd(a *app) *cobra.Command {
	o := &slaMonitorOptions{}
	cmd := &cobra.Command{
		Use:   "monitor [HOST...]",
		Short: "Run the polling and monitoring agents in the foreground, recording SLA events",
		Long: `Run both SLA agents against every inventory host (or the HOSTs given, names or libvirt
URIs) until interrupted (Ctrl-C, SIGTERM), writing their events to the SLA log in the
state database and printing every event that enters the log (theirs, and the migration
events of 'ferry migrate' runs) as one line each (-o json: one JSON object per line).

Polling agent: every --poll-interval it asks each host's libvirtd for its node info, each
poll bounded by --poll-timeout. PS_Timeout for every failed poll, PS_Unreachable after
--unreachable-after failures in a row, PS_Reachable at the first success after that. A
stopped (SIGSTOP) or hung libvirtd gives timeouts, never a hang.

Monitoring agent: one libvirt connection per host (keepalive 5 s x 3) and its domain
events: crashes and emulator failures become VM_Failure, owner stops VM_Stopped, starts
VM_Started or VM_Reachable; events of a migration in the log carry its id and are no
failures. When the connection drops: Monitor_Blind and VM_Unreachable per VM, reconnect
with backoff, Monitor_Sight, and every domain's state is read again so nothing that
happened while blind goes unrecorded.

Prometheus metrics are served on http://--metrics-addr/metrics (loopback by default;
"" turns them off): ferry_sla_vm_unavailable_seconds_total, ferry_sla_vm_eligible_seconds_total,
ferry_sla_migration_downtime_seconds, ferry_sla_host_up, ferry_sla_events_total.`,
		Example: `  ferry sla monitor
  ferry sla monitor --poll-interval 5s --poll-timeout 2s --unreachable-after 3
  ferry sla monitor host1 host2 --metrics-addr 127.0.0.1:9500
  ferry sla monitor -o json >> /var/log/ferry-sla.jsonl`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.hosts = args
			if err := o.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), a, cmd)
		},
	}
	f := cmd.Flags()
	o.agents.addFlags(f)
	f.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9464", `address of the Prometheus /metrics endpoint ("" for none)`)
	return cmd
}

func (o *slaMonitorOptions) validate() error {
	if err := o.agents.validate(); err != nil {
		return err
	}
	if o.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return usagef("--metrics-addr %q: want host:port, e.g. 127.0.0.1:9464 (%v)", o.metricsAddr, err)
		}
	}
	return nil
}

func (o *slaMonitorOptions) targets(a *app) ([]sla.Target, error) {
	inv, err := a.inventory()
	if err != nil {
		return nil, err
	}
	return slaTargets(inv, o.hosts)
}

func (o *slaMonitorOptions) run(ctx context.Context, a *app, cmd *cobra.Command) error {
	targets, err := o.targets(a)
	if err != nil {
		return err
	}
	log, err := a.slaLog(ctx)
	if err != nil {
		return err
	}
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var outMu sync.Mutex
	m := o.agents.monitor(log, targets)
	m.OnEvent = func(e sla.Event) {
		outMu.Lock()
		defer outMu.Unlock()
		if a.json() {
			_ = writeJSONLine(out, e)
			return
		}
		fmt.Fprintln(out, eventLine(e))
	}
	m.OnError = func(err error) { a.log.WithError(err).Warn("sla monitor") }
	metricsURL := "off"
	var srv *http.Server
	if o.metricsAddr != "" {
		m.Metrics = sla.NewMetrics()
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics endpoint: %w (choose another --metrics-addr, or \"\" for none)", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Metrics.Handler())
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.WithError(err).Error("metrics endpoint")
			}
		}()
		metricsURL = "http://" + ln.Addr().String() + "/metrics"
	}
	fmt.Fprintf(errw, "ferry sla monitor: watching %s; %s; metrics %s; Ctrl-C stops\n", targetList(targets), o.agents.describe(), metricsURL)
	err = m.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(errw, "ferry sla monitor: stopped")
	return nil
}
