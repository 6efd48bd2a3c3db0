package inventory

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/virt"
)

// Errors of Load, Parse and Resolve; the error text says what to fix.
var (
	// ErrInvalid: the inventory file, or a host given on the command line, is malformed.
	ErrInvalid = errors.New("invalid inventory or host")
	// ErrUnknownHost: a name that is neither in the inventory nor a libvirt URI.
	ErrUnknownHost = errors.New("unknown host")
)

// Error is a Resolve failure: its text is the whole message, and errors.Is
// finds its kind (ErrInvalid or ErrUnknownHost) and cause.
type Error struct {
	Kind error
	Msg  string
	Err  error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Limits bound the moves in flight per host, across every ferry process
// sharing the state database; 0 means no limit.
type Limits struct {
	MaxIncoming int `yaml:"max_incoming,omitempty" json:"max_incoming,omitempty"`
	MaxOutgoing int `yaml:"max_outgoing,omitempty" json:"max_outgoing,omitempty"`
}

// DefaultReservedMemoryMiB is kept free on every destination for the host
// itself when the inventory does not say otherwise (like Nova's
// reserved_host_memory_mb).
const DefaultReservedMemoryMiB = 256

// Host is one host of the inventory.
type Host struct {
	Name              string            `yaml:"name" json:"name"`
	URI               string            `yaml:"uri" json:"uri"`
	MigrationAddress  string            `yaml:"migration_address,omitempty" json:"migration_address,omitempty"`
	Labels            map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	ReservedMemoryMiB *uint64           `yaml:"reserved_memory_mib,omitempty" json:"reserved_memory_mib,omitempty"`
	// LinkMiBps is the migration link's bandwidth, used to plan pre-copy.
	LinkMiBps uint64 `yaml:"link_mibps,omitempty" json:"link_mibps,omitempty"`
	// LinkRTTMs is the round trip between the other hosts and this one, in
	// milliseconds: a migration stream is one TCP connection, whose window
	// caps it at about a window per round trip on a long link.
	LinkRTTMs uint64 `yaml:"link_rtt_ms,omitempty" json:"link_rtt_ms,omitempty"`
	// MigrationTLS says whether guest memory moving to or from this host
	// is encrypted (QEMU's TLS migration): required, preferred (the
	// default: when both hosts have the certificates) or off.
	MigrationTLS string `yaml:"migration_tls,omitempty" json:"migration_tls,omitempty"`
	// MigrationTLSDir is where the host's QEMU finds those certificates
	// (qemu.conf migrate_tls_x509_cert_dir; default DefaultMigrationTLSDir).
	MigrationTLSDir string `yaml:"migration_tls_dir,omitempty" json:"migration_tls_dir,omitempty"`
	// MigrationTLSName is the name in the host's certificate when it is not
	// its migration address.
	MigrationTLSName string `yaml:"migration_tls_name,omitempty" json:"migration_tls_name,omitempty"`
}

// Migration TLS policies (Host.MigrationTLS).
const (
	TLSRequired  = "required"
	TLSPreferred = "preferred"
	TLSOff       = "off"
)

// DefaultMigrationTLSDir is libvirt's default migrate_tls_x509_cert_dir.
const DefaultMigrationTLSDir = "/etc/pki/qemu"

// TLSPolicy is the host's migration TLS policy, defaults applied.
func (h Host) TLSPolicy() string {
	if h.MigrationTLS == "" {
		return TLSPreferred
	}
	return h.MigrationTLS
}

// TLSDir is the host's migration certificate directory, defaults applied.
func (h Host) TLSDir() string {
	if h.MigrationTLSDir == "" {
		return DefaultMigrationTLSDir
	}
	return h.MigrationTLSDir
}

// ReservedBytes is the memory never handed to migrated guests.
func (h Host) ReservedBytes() uint64 {
	if h.ReservedMemoryMiB != nil {
		return *h.ReservedMemoryMiB << 20
	}
	return DefaultReservedMemoryMiB << 20
}

// DataURI is where QEMU sends memory: the migration address when set, so the
// copy takes the network the operator chose rather than libvirt's guess.
func (h Host) DataURI() string {
	if h.MigrationAddress == "" {
		return ""
	}
	return "tcp://" + h.MigrationAddress
}

// Inventory is the set of hosts ferry knows by name.
type Inventory struct {
	Path     string `yaml:"-" json:"path,omitempty"`
	Hosts    []Host `yaml:"hosts" json:"hosts"`
	HooksDir string `yaml:"hooks_dir,omitempty" json:"hooks_dir,omitempty"`
	// Webhooks are called at stage boundaries like the hooks directory's
	// executables (package hooks).
	Webhooks []hooks.Webhook `yaml:"webhooks,omitempty" json:"webhooks,omitempty"`
	// Limits bound concurrent moves per host for every ferry process using
	// this inventory and one state database (drain flags override them).
	Limits Limits `yaml:"limits,omitempty" json:"limits,omitempty"`
}

// DefaultConfigPaths are tried in order when neither --config nor FERRY_CONFIG is set.
var DefaultConfigPaths = []string{"/etc/ferry/ferry.yaml", "ferry.yaml"}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s is acceptable as a host or VM name given by a user.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Load reads the inventory from the flag path, FERRY_CONFIG, or the
// default paths. Without any file it returns an empty inventory: hosts can
// still be given as URIs.
func Load(flagPath string) (*Inventory, error) {
	path, explicit := flagPath, flagPath != ""
	if path == "" {
		path = os.Getenv("FERRY_CONFIG")
		explicit = path != ""
	}
	if path == "" {
		for _, p := range DefaultConfigPaths {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		return &Inventory{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return &Inventory{}, nil
		}
		return nil, fmt.Errorf("%w: reading inventory: %w", ErrInvalid, err)
	}
	inv, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: inventory %s: %w", ErrInvalid, path, err)
	}
	inv.Path = path
	return inv, nil
}

// Parse parses and validates an inventory document.
func Parse(data []byte) (*Inventory, error) {
	var inv Inventory
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	seen := map[string]bool{}
	for i, h := range inv.Hosts {
		if !ValidName(h.Name) {
			return nil, fmt.Errorf("host %d: name %q must be 1-64 letters, digits, '.', '_' or '-'", i+1, h.Name)
		}
		if seen[h.Name] {
			return nil, fmt.Errorf("host %q listed twice", h.Name)
		}
		seen[h.Name] = true
		if err := virt.ValidateURI(h.URI); err != nil {
			return nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
		if err := h.validateTLS(); err != nil {
			return nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
		if err := h.validateLink(); err != nil {
			return nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
	}
	if inv.Limits.MaxIncoming < 0 || inv.Limits.MaxOutgoing < 0 {
		return nil, fmt.Errorf("limits: max_incoming and max_outgoing must be 0 (no limit) or more")
	}
	for i, w := range inv.Webhooks {
		if err := w.Validate(); err != nil {
			return nil, fmt.Errorf("webhook %d (%s): %w", i+1, w.Name(), err)
		}
	}
	return &inv, nil
}

// Names lists the inventory's host names, sorted.
func (inv *Inventory) Names() []string {
	out := make([]string, 0, len(inv.Hosts))
	for _, h := range inv.Hosts {
		out = append(out, h.Name)
	}
	sort.Strings(out)
	return out
}

// Resolve finds a host by inventory name or accepts a libvirt URI ad hoc.
func (inv *Inventory) Resolve(s string) (Host, error) {
	for _, h := range inv.Hosts {
		if h.Name == s || h.URI == s {
			return h, nil
		}
	}
	if strings.Contains(s, "://") || strings.Contains(s, ":/") {
		if err := virt.ValidateURI(s); err != nil {
			return Host{}, &Error{Kind: ErrInvalid, Msg: err.Error(), Err: err}
		}
		host := virt.URIHost(s)
		name := host
		if name == "" {
			name = "local"
		}
		return Host{Name: name, URI: s, MigrationAddress: host}, nil
	}
	if !ValidName(s) {
		return Host{}, &Error{Kind: ErrInvalid, Msg: fmt.Sprintf("host %q is not a valid name (letters, digits, '.', '_', '-') nor a libvirt URI", s)}
	}
	known := "the inventory is empty"
	if len(inv.Hosts) > 0 {
		known = "known hosts: " + strings.Join(inv.Names(), ", ")
	}
	where := "no inventory file"
	if inv.Path != "" {
		where = inv.Path
	}
	return Host{}, &Error{Kind: ErrUnknownHost, Msg: fmt.Sprintf("unknown host %q: not in the inventory (%s; %s) and not a libvirt URI such as qemu+tcp://%s/system", s, where, known, s)}
}

// Ranges of the link settings of a host entry.
const (
	MaxLinkMiBps = 1 << 20 // 1 TiB/s
	MaxLinkRTTMs = 10_000
)

// validateLink checks the link settings of a host entry.
func (h Host) validateLink() error {
	if h.LinkMiBps > MaxLinkMiBps {
		return fmt.Errorf("link_mibps %d: give 1-%d MiB/s, or leave it out for the default estimate", h.LinkMiBps, MaxLinkMiBps)
	}
	if h.LinkRTTMs > MaxLinkRTTMs {
		return fmt.Errorf("link_rtt_ms %d: give 0-%d ms", h.LinkRTTMs, MaxLinkRTTMs)
	}
	return nil
}

// validateTLS checks the migration TLS settings of a host entry.
func (h Host) validateTLS() error {
	switch h.MigrationTLS {
	case "", TLSRequired, TLSPreferred, TLSOff:
	default:
		return fmt.Errorf("migration_tls %q: use required, preferred or off", h.MigrationTLS)
	}
	if h.MigrationTLSDir != "" && !filepath.IsAbs(h.MigrationTLSDir) {
		return fmt.Errorf("migration_tls_dir %q must be an absolute path", h.MigrationTLSDir)
	}
	if h.MigrationTLSName != "" && !tlsNameRE.MatchString(h.MigrationTLSName) {
		return fmt.Errorf("migration_tls_name %q is not a host name or address", h.MigrationTLSName)
	}
	return nil
}

var tlsNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$`)
