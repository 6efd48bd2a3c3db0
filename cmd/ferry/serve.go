package main

import (
	"net"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// DefaultListen is where `ferry serve` listens unless told otherwise:
// loopback, so nothing is exposed by accident.
const DefaultListen = "127.0.0.1:7480"

// minTokenLen: shorter tokens can be guessed.
const minTokenLen = 16

// tokenHelp says how to make a token, in every message about one.
const tokenHelp = "make one with `umask 077; openssl rand -hex 32 > /etc/ferry/api-token` and pass --token-file /etc/ferry/api-token (or set FERRY_API_TOKEN)"

type serveOptions struct {
	listen         string
	tokenFile      string
	tlsCert        string
	tlsKey         string
	insecureListen bool
	agents         slaAgentOptions

	token string
}

func newServeCmd(a *app) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the SLA monitors and the HTTP API (migrations, drains, SLA reports, metrics)",
		Long: `Run the SLA monitors (as 'ferry sla monitor' does) and an HTTP API in one daemon until
SIGINT or SIGTERM.

Endpoints (JSON; every one but /healthz needs "Authorization: Bearer <token>"):

  POST   /v1/migrations             start a live or cold move ({"vm", "to": HOST or "auto", ...});
                                    answers once the destination is reserved: 202 with the id,
                                    200 with "existing": true if the VM is being moved already
  GET    /v1/migrations/ID          stage, progress, stage timestamps, downtime, outcome
  GET    /v1/migrations?vm=&state=&limit=
  DELETE /v1/migrations/ID          cancel a move this server runs (it rolls back)
  POST   /v1/hosts/HOST/drain       drain a host (202 with the drain's id)
  GET    /v1/drains/ID              the drain's report
  DELETE /v1/drains/ID[?abort=true] stop starting moves (abort: roll back moves in flight)
  GET    /v1/sla/report             as 'ferry sla report -o json' (vm, host, from, to, target, ...)
  GET    /metrics                   Prometheus: the SLA metrics and ferry_api_*
  GET    /healthz                   no auth; 200 when the state database answers and the
                                    monitors run, else 503

The token comes from --token-file or $FERRY_API_TOKEN; ferry serve refuses to start
without one. It listens on ` + DefaultListen + ` (loopback) unless --listen says otherwise; a
non-loopback address needs --tls-cert and --tls-key, or --insecure-listen (for a TLS proxy
in front), because the token would otherwise cross the network in clear text.

On SIGINT or SIGTERM it stops accepting requests, lets running drains finish their moves
in flight without starting new ones, waits for the migrations in flight to end, then
exits; a second signal rolls the migrations in flight back instead.`,
		Example: `  umask 077; openssl rand -hex 32 > /etc/ferry/api-token
  ferry serve --token-file /etc/ferry/api-token
  FERRY_API_TOKEN=$(cat /etc/ferry/api-token) ferry serve --listen 127.0.0.1:9000
  ferry serve --token-file /etc/ferry/api-token --listen 0.0.0.0:7480 --tls-cert /etc/ferry/tls.crt --tls-key /etc/ferry/tls.key
  curl -H "Authorization: Bearer $(cat /etc/ferry/api-token)" -d '{"vm":"web-01","to":"host2"}' http://127.0.0.1:7480/v1/migrations`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(os.Getenv("FERRY_API_TOKEN")); err != nil {
				return err
			}
			// A daemon logs its requests unless told to be quieter.
			if f := cmd.Flag("log-level"); f != nil && !f.Changed {
				a.log.SetLevel(logrus.InfoLevel)
			}
			return o.run(cmd.Context(), a, cmd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", DefaultListen, "address to listen on, host:port (loopback unless TLS or --insecure-listen)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the API bearer token (default: $FERRY_API_TOKEN)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; with --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the certificate's private key (PEM)")
	f.BoolVar(&o.insecureListen, "insecure-listen", false, "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)")
	o.agents.addFlags(f)
	return cmd
}

func (o *serveOptions) validate(envToken string) error {
	if err := o.agents.validate(); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(o.listen)
	if err != nil {
		return usagef("--listen %q: want host:port, e.g. %s (%v)", o.listen, DefaultListen, err)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if o.tlsCert == "" && !o.insecureListen && !loopback(host) {
		return usagef("--listen %s is not a loopback address: without TLS the bearer token and every request would cross the network in clear text; give --tls-cert and --tls-key, or --insecure-listen if a TLS proxy sits in front", o.listen)
	}
	o.token, err = readToken(o.tokenFile, envToken)
	return err
}

// loopback reports whether a listen host only accepts local connections
// ("" and 0.0.0.0 listen everywhere).
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readToken takes the token from the file, else the environment. The file
// must not be readable by others: whoever reads it controls every VM.
func readToken(path, env string) (string, error) {
	if path == "" {
		tok := strings.TrimSpace(env)
		if tok == "" {
			return "", usagef("no API token: %s", tokenHelp)
		}
		if len(tok) < minTokenLen {
			return "", usagef("FERRY_API_TOKEN is too short (%d characters, want at least %d): %s", len(tok), minTokenLen, tokenHelp)
		}
		return tok, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", usagef("--token-file: %v; %s", err, tokenHelp)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", usagef("--token-file %s is readable by other users (mode %04o): chmod 600 %s", path, st.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("--token-file: %v", err)
	}
	tok := strings.TrimSpace(string(data))
	switch {
	case tok == "":
		return "", usagef("--token-file %s is empty: %s", path, tokenHelp)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", usagef("--token-file %s: the token must be one line without spaces", path)
	case len(tok) < minTokenLen:
		return "", usagef("--token-file %s: the token is too short (%d characters, want at least %d): %s", path, len(tok), minTokenLen, tokenHelp)
	}
	return tok, nil
}
