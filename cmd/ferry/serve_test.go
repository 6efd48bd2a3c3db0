package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("0123456789abcdef0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    serveOptions
		env  string
		want string // "" = valid
	}{
		{"token file", serveOptions{listen: DefaultListen, tokenFile: good}, "", ""},
		{"token from the environment", serveOptions{listen: DefaultListen}, "0123456789abcdef0123456789abcdef", ""},
		{"no token", serveOptions{listen: DefaultListen}, "", "openssl rand"},
		{"short token in the environment", serveOptions{listen: DefaultListen}, "abc", "too short"},
		{"short token in the file", serveOptions{listen: DefaultListen, tokenFile: short}, "", "too short"},
		{"token file readable by others", serveOptions{listen: DefaultListen, tokenFile: open}, "", "chmod 600"},
		{"missing token file", serveOptions{listen: DefaultListen, tokenFile: filepath.Join(dir, "nope")}, "", "no such file"},
		{"bad listen", serveOptions{listen: "7480", tokenFile: good}, "", "want host:port"},
		{"everywhere without TLS", serveOptions{listen: ":7480", tokenFile: good}, "", "clear text"},
		{"public address without TLS", serveOptions{listen: "10.1.2.3:7480", tokenFile: good}, "", "clear text"},
		{"public address, insecure", serveOptions{listen: "0.0.0.0:7480", tokenFile: good, insecureListen: true}, "", ""},
		{"public address with TLS", serveOptions{listen: "0.0.0.0:7480", tokenFile: good, tlsCert: "c.pem", tlsKey: "k.pem"}, "", ""},
		{"localhost", serveOptions{listen: "localhost:7480", tokenFile: good}, "", ""},
		{"IPv6 loopback", serveOptions{listen: "[::1]:7480", tokenFile: good}, "", ""},
		{"cert without key", serveOptions{listen: DefaultListen, tokenFile: good, tlsCert: "c.pem"}, "", "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.agents = slaAgentOptions{pollInterval: 20e9, pollTimeout: 5e9, unreachableAfter: 3}
			err := o.validate(tc.env)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			case err != nil && exitCode(err) != exitRefused:
				t.Fatalf("exit code %d for %v", exitCode(err), err)
			case err == nil && !strings.HasPrefix(o.token, "0123456789abcdef"):
				t.Fatalf("token %q", o.token)
			}
			if err != nil && strings.Contains(err.Error(), "0123456789abcdef") {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
}

func TestServeNeedsToken(t *testing.T) {
	t.Setenv("FERRY_API_TOKEN", "")
	_, code := run(t, filepath.Join(t.TempDir(), "ferry.db"), "", "serve")
	if code != exitRefused {
		t.Fatalf("serve without a token: exit %d", code)
	}
}
