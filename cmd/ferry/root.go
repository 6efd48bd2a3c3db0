package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	config    string
	state     string
	output    string
	logLevel  string
	logFormat string
}

type app struct {
	opts globalOptions
	log  *logrus.Logger
	j    *journal.Journal // the state database, once opened
}

func newRootCmd() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Move virtual machines between libvirt/QEMU hosts, live or cold, and account for every pause",
		Long: `ferry moves virtual machines between libvirt/QEMU hosts.

Live migration runs as a six-stage transaction (pre-migration, reservation,
iterative pre-copy, stop-and-copy, commitment, activation) with a journal, so a
failure leaves the VM running on the source and a crash can be finished with
'ferry recover'.

Hosts come from an inventory file (--config, $FERRY_CONFIG, /etc/ferry/ferry.yaml,
./ferry.yaml) or are given as libvirt URIs (qemu+tcp://host/system).
State (journal, reservations) lives in --state, $FERRY_STATE or ` + journal.DefaultPath + `.

Exit codes: 0 success, 1 error, 2 bad input or refused (nothing changed),
3 rolled back (VM runs on the source), 4 needs 'ferry recover'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(cmd, a.opts.output); err != nil {
				return err
			}
			return a.setup(cmd.ErrOrStderr())
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if a.j != nil {
				a.j.Close()
			}
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&a.opts.config, "config", "", "inventory file (default $FERRY_CONFIG, /etc/ferry/ferry.yaml, ./ferry.yaml)")
	f.StringVar(&a.opts.state, "state", "", "state database (default $FERRY_STATE or "+journal.DefaultPath+")")
	f.StringVarP(&a.opts.output, "output", "o", "text", "output format: text or json")
	f.StringVar(&a.opts.logLevel, "log-level", "warning", "log level on stderr: debug, info, warning, error")
	f.StringVar(&a.opts.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newMigrateCmd(a), newHostsCmd(a), newVMsCmd(a), newHistoryCmd(a), newShowCmd(a), newRecoverCmd(a))
	root.AddCommand(newSLACmd(a))
	root.AddCommand(newPlaceCmd(a))
	root.AddCommand(newServeCmd(a))
	root.AddCommand(newDrainCmd(a), newUndrainCmd(a))
	return root
}

func (a *app) setup(stderr io.Writer) error {
	lvl, err := logrus.ParseLevel(a.opts.logLevel)
	if err != nil {
		return usagef("--log-level %q: use debug, info, warning or error", a.opts.logLevel)
	}
	a.log = logrus.New()
	a.log.SetOutput(stderr)
	a.log.SetLevel(lvl)
	switch a.opts.logFormat {
	case "json":
		a.log.SetFormatter(&logrus.JSONFormatter{})
	case "text":
	default:
		return usagef("--log-format %q: use text or json", a.opts.logFormat)
	}
	return nil
}

func (a *app) json() bool { return a.opts.output == "json" }

// outputFormatsAnnotation lists, comma-separated, the --output formats of a
// command that accepts more than text and json (e.g. "text,table,json,csv").
const outputFormatsAnnotation = "ferry/output-formats"

func checkOutput(cmd *cobra.Command, o string) error {
	formats := []string{"text", "json"}
	if f := cmd.Annotations[outputFormatsAnnotation]; f != "" {
		formats = strings.Split(f, ",")
	}
	if slices.Contains(formats, o) {
		return nil
	}
	return usagef("--output %q: use %s", o, strings.Join(formats, ", "))
}

func (a *app) inventory() (*inventory.Inventory, error) {
	return inventory.Load(a.opts.config)
}

// controller opens the state database and the inventory.
func (a *app) controller(ctx context.Context) (*orchestrator.Controller, error) {
	inv, err := a.inventory()
	if err != nil {
		return nil, err
	}
	j, err := a.journal(ctx)
	if err != nil {
		return nil, err
	}
	slaLog, err := sla.NewLog(ctx, a.j.DB())
	if err != nil {
		return nil, err
	}
	return &orchestrator.Controller{Inventory: inv, Journal: j, Log: logrus.NewEntry(a.log),
		Events: orchestrator.SLAFeed{Log: slaLog}, Limits: inv.Limits}, nil
}

func (a *app) journal(ctx context.Context) (*journal.Journal, error) {
	if a.j != nil {
		return a.j, nil
	}
	j, err := journal.Open(ctx, journal.Path(a.opts.state))
	if err != nil {
		return nil, fmt.Errorf("%w (set --state or FERRY_STATE to a writable path)", err)
	}
	a.j = j
	return j, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := jsonEncoder(w)
	return enc.Encode(v)
}

func printf(w io.Writer, format string, args ...any) { fmt.Fprintf(w, format, args...) }

// oneArg accepts exactly one positional argument. Otherwise the usage error
// (exit 2) says what the command takes, e.g. "drain takes exactly one host
// (its inventory name)", and how many arguments it got.
func oneArg(takes string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("%s, got %d arguments", takes, len(args))
		}
		return nil
	}
}
