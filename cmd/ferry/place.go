package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/units"
)

type placeOptions struct {
	vm            string
	avoid, prefer []string
	opt           placement.Options
}

func newPlaceCmd(a *app) *cobra.Command {
	o := &placeOptions{}
	cmd := &cobra.Command{
		Use:   "place VM",
		Short: "Choose a destination host for a VM and explain why (changes nothing)",
		Long: `Choose where VM would go, and say why every other host was rejected.

A host is rejected when it is the VM's source, unreachable, in maintenance
('ferry drain'), cannot run the guest's CPU, has fewer CPUs than the VM has vCPUs,
carries a label given with --avoid-label, or has too little memory once its host
reserve (inventory reserved_memory_mib) and the memory held by migrations in flight
are taken off its free memory. Among the hosts that fit, those matching the most
--prefer-label pairs come first, then the most available memory (spreading load),
then the name.

Exit codes: 0 a host was chosen, 2 no host fits (every host's reason is printed)
or bad input, 1 other errors.`,
		Example: `  ferry place web-01
  ferry place web-01 --avoid-label rack=r1
  ferry place db-02 --prefer-label ssd=yes --prefer-label zone=b -o json`,
		Args: oneArg("place takes exactly one VM (name or UUID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.vm = args[0]
			if err := o.validate(); err != nil {
				return err
			}
			c, err := a.controller(cmd.Context())
			if err != nil {
				return err
			}
			return o.run(cmd, a, c)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.avoid, "avoid-label", nil, "reject hosts with this inventory label, key=value (repeatable)")
	f.StringArrayVar(&o.prefer, "prefer-label", nil, "rank hosts with this inventory label first among those that fit, key=value (repeatable)")
	return cmd
}

func (o *placeOptions) validate() error {
	opt, err := parseLabels(o.avoid, o.prefer)
	o.opt = opt
	return err
}

// parseLabels reads --avoid-label and --prefer-label values.
func parseLabels(avoid, prefer []string) (placement.Options, error) {
	var opt placement.Options
	for _, set := range []struct {
		flag string
		in   []string
		out  *[]placement.Label
	}{{"--avoid-label", avoid, &opt.Avoid}, {"--prefer-label", prefer, &opt.Prefer}} {
		for _, s := range set.in {
			l, err := placement.ParseLabel(s)
			if err != nil {
				return opt, usagef("%s %q: use key=value, e.g. rack=r1", set.flag, s)
			}
			*set.out = append(*set.out, l)
		}
	}
	return opt, nil
}

func (o *placeOptions) run(cmd *cobra.Command, a *app, c *orchestrator.Controller) error {
	p, err := c.PlaceVM(cmd.Context(), o.vm, o.opt)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if a.json() {
		if err := writeJSON(out, p); err != nil {
			return err
		}
	} else if err := printPlacement(out, p); err != nil {
		return err
	}
	return p.Err()
}

// printPlacement writes the choice and one line per host with its verdict.
func printPlacement(w io.Writer, p *placement.Placement) error {
	if p.Host != "" {
		printf(w, "VM %s (%s, %d vCPUs) on %s: place on %s\n\n", p.VM.Name, units.IEC(p.VM.MemoryBytes), p.VM.VCPUs, p.Source, p.Reason)
	} else {
		printf(w, "VM %s (%s, %d vCPUs) on %s: no host fits\n\n", p.VM.Name, units.IEC(p.VM.MemoryBytes), p.VM.VCPUs, p.Source)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tHOST\tAVAILABLE\tVERDICT\tREASON")
	for _, v := range p.Verdicts {
		rank, verdict, avail := "-", "rejected", "-"
		if v.Fits {
			rank, verdict, avail = fmt.Sprint(v.Rank), "fits", units.IEC(v.AvailableBytes)
			if v.Chosen {
				verdict = "chosen"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rank, v.Host, avail, verdict, v.Reason)
	}
	return tw.Flush()
}
