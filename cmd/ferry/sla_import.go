package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

type slaImportOptions struct {
	file   string
	source string
}

func newSLAImportCmd(a *app) *cobra.Command {
	o := &slaImportOptions{}
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import SLA events from another monitor (JSON lines); all or nothing",
		Long: `Import events from FILE ("-" for standard input), one JSON object per line:

  {"kind":"VM_Failure","host":"host1","vm":"web-01","observed_at":"2025-06-01T10:00:00Z","detail":"..."}

Fields: kind, host, vm, vm_uuid, observed_at (RFC 3339, optional fraction), detail,
correlation_id, dedup_key, payload (a JSON object). Unknown fields are errors; blank lines
are skipped. The events get the source "import:NAME" (--source, default the file's base
name).

Every line is validated first. If any is bad, the bad lines are listed by line number
with the reason, nothing is imported, and the exit code is 2. Otherwise all lines are
imported in one transaction; lines already in the log (same dedup key) are skipped, so a
file can be imported again safely.`,
		Example: `  ferry sla import nagios-outages.jsonl
  ferry sla import --source zabbix - < events.jsonl`,
		Args: oneArg("import takes exactly one FILE (or - for standard input)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.file = args[0]
			var r io.Reader = cmd.InOrStdin()
			name := "stdin"
			if o.file != "-" {
				f, err := os.Open(o.file)
				if err != nil {
					return usagef("%v", err)
				}
				defer f.Close()
				r = f
				name = strings.TrimSuffix(filepath.Base(o.file), filepath.Ext(o.file))
			}
			if o.source != "" {
				name = o.source
			}
			log, err := a.slaLog(cmd.Context())
			if err != nil {
				return err
			}
			n, err := log.Import(cmd.Context(), r, name)
			if err != nil {
				return slaInput(err)
			}
			out := cmd.OutOrStdout()
			if a.json() {
				return writeJSON(out, map[string]any{"imported": n, "source": "import:" + name, "file": o.file})
			}
			fmt.Fprintf(out, "imported %d new event(s) from %s as source import:%s\n", n, o.file, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.source, "source", "", "name of the monitor the events come from (default: the file's base name)")
	return cmd
}
