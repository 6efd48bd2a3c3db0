// Command linkdelay is the lab's userspace delay stage (hack/lab-link.sh --delay/--jitter), for
// kernels without the netem qdisc. It runs in the switch namespace of a lab brought up with
// FERRY_LAB_LINKS=netns (hack/lab-net.sh) and holds the frames of the delayed directions.
//
//	linkdelay serve -sock PATH -pid PATH [-log PATH] [-cap BYTES]
//	linkdelay ctl -sock PATH COMMAND [ARGS...]
//
// For each delayed direction A -> B the daemon owns a TAP device (named by lab-link.sh, e.g.
// dl-h1-h2). tc in the switch redirects A -> B's IPv4 frames from A's bridge port into the tap
// (ingress of port A, u32 ip dst B, mirred egress redirect), and whatever the tap receives to B's
// port (ingress of the tap, mirred egress redirect). The daemon reads each frame the kernel sends
// to the tap, holds it until its arrival + delay (+ a uniform draw in [-jitter, +jitter]; never
// ahead of the frame before it, so one direction is never reordered) and writes it back to the tap.
// The tap speaks virtio-net headers with TCP/UDP segmentation and checksum offload on, so a
// 64 KiB GSO frame crosses in one read and one write and comes out as it went in.
//
// Control (one command a connection over the Unix socket; linkdelay ctl sends one):
//
//	ping                      the daemon answers
//	set TAP DELAY JITTER      delay the direction of TAP (made, and brought up, when new: then
//	                          the answer is "made TAP"); DELAY, JITTER as 50ms, 500us, 1.5s
//	                          (0 <= each <= 60s)
//	clear TAP                 release TAP's queued frames at once and remove TAP
//	show [TAP]                one line per direction: settings and counters
//
// Answers: "ok" or "error: WHY" on the first line, then the output. At most -cap bytes are queued
// per direction; frames beyond are dropped (and counted).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	maxDelay   = 60 * time.Second
	defaultCap = 64 << 20
	// a read from the tap: virtio-net header + a GSO frame of up to 64 KiB (room for more)
	readBuf   = 256 << 10
	tapTxQLen = 10000
)

// ---- the delay line (pure: no I/O, the caller passes the time) ------------------------------

type frame struct {
	data []byte
	due  time.Time
}

// stats are a direction's counters.
type stats struct {
	Frames, Bytes uint64 // accepted into the line (a GSO frame counts once)
	Dropped       uint64 // refused: the queue was at its cap
	Queued        int    // frames held now
	QueuedBytes   int    // bytes held now
}

// line holds one direction's frames until they are due.
type line struct {
	mu     sync.Mutex
	delay  time.Duration
	jitter time.Duration
	cap    int
	rnd    func(n int64) int64 // uniform in [0, n)
	q      []frame
	head   int
	qbytes int
	last   time.Time // due time of the last frame accepted: none leaves before it
	st     stats
}

func newLine(delay, jitter time.Duration, capBytes int, rnd func(int64) int64) *line {
	if rnd == nil {
		rnd = rand.Int64N
	}
	return &line{delay: delay, jitter: jitter, cap: capBytes, rnd: rnd}
}

// set changes the delay and jitter of frames accepted from now on (those held keep their times).
func (l *line) set(delay, jitter time.Duration) {
	l.mu.Lock()
	l.delay, l.jitter = delay, jitter
	l.mu.Unlock()
}

func (l *line) settings() (time.Duration, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delay, l.jitter
}

// push accepts a frame that arrived at now. It reports whether it was accepted (false: the queue
// is at its cap, the frame is dropped) and whether the line was empty before (the sender sleeps).
func (l *line) push(data []byte, now time.Time) (accepted, wasEmpty bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.qbytes+len(data) > l.cap {
		l.st.Dropped++
		return false, false
	}
	d := l.delay
	if l.jitter > 0 {
		d += time.Duration(l.rnd(2*int64(l.jitter)+1)) - l.jitter
	}
	if d < 0 {
		d = 0
	}
	due := now.Add(d)
	if due.Before(l.last) {
		due = l.last
	}
	l.last = due
	wasEmpty = l.head == len(l.q)
	l.q = append(l.q, frame{data: data, due: due})
	l.qbytes += len(data)
	l.st.Frames++
	l.st.Bytes += uint64(len(data))
	return true, wasEmpty
}

// next pops the first frame if it is due at now; else wait is how long until it is (-1: empty).
func (l *line) next(now time.Time) (data []byte, wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.q) {
		return nil, -1, false
	}
	f := l.q[l.head]
	if f.due.After(now) {
		return nil, f.due.Sub(now), false
	}
	l.popLocked()
	return f.data, 0, true
}

// flush pops every frame held, due or not.
func (l *line) flush() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	for l.head < len(l.q) {
		out = append(out, l.q[l.head].data)
		l.popLocked()
	}
	return out
}

func (l *line) popLocked() {
	l.qbytes -= len(l.q[l.head].data)
	l.q[l.head] = frame{}
	l.head++
	switch {
	case l.head == len(l.q):
		l.q, l.head = l.q[:0], 0
	case l.head >= 1024 && l.head*2 >= len(l.q):
		n := copy(l.q, l.q[l.head:])
		clear(l.q[n:])
		l.q, l.head = l.q[:n], 0
	}
}

func (l *line) stats() stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.st
	s.Queued = len(l.q) - l.head
	s.QueuedBytes = l.qbytes
	return s
}

// ---- time ------------------------------------------------------------------------------------

type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// send writes l's frames to w as they fall due, until stop is closed; then the frames still held
// go out at once. kick wakes it when a frame arrives in an empty line.
func send(w io.Writer, l *line, c clock, kick <-chan struct{}, stop <-chan struct{}, logf func(string, ...any)) {
	defer func() {
		for _, b := range l.flush() {
			if _, err := w.Write(b); err != nil {
				logf("write at flush: %v", err)
				return
			}
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		data, wait, ok := l.next(c.Now())
		if ok {
			if _, err := w.Write(data); err != nil && !errors.Is(err, os.ErrClosed) {
				logf("write: %v", err)
			}
			continue
		}
		var timer <-chan time.Time
		if wait >= 0 {
			timer = c.After(wait)
		}
		select {
		case <-stop:
			return
		case <-kick:
		case <-timer:
		}
	}
}

// ---- commands --------------------------------------------------------------------------------

type command struct {
	verb   string // ping, set, clear, show
	tap    string
	delay  time.Duration
	jitter time.Duration
}

var tapName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

func parseDuration(what, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a duration such as 50ms, 500us or 1s", what, s)
	}
	if d < 0 || d > maxDelay {
		return 0, fmt.Errorf("%s %q: want 0 to %v", what, s, maxDelay)
	}
	return d, nil
}

func checkTap(s string) error {
	if !tapName.MatchString(s) {
		return fmt.Errorf("bad tap name %q: 1 to 15 of A-Z a-z 0-9 _ . - (not starting with _ . -)", s)
	}
	return nil
}

// parseCommand parses one control line.
func parseCommand(s string) (command, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return command{}, errors.New("empty command (ping, set, clear, show)")
	}
	c := command{verb: f[0]}
	args := f[1:]
	want := func(lo, hi int, use string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("usage: %s", use)
		}
		return nil
	}
	var err error
	switch c.verb {
	case "ping":
		err = want(0, 0, "ping")
	case "set":
		if err = want(3, 3, "set TAP DELAY JITTER"); err != nil {
			break
		}
		c.tap = args[0]
		if err = checkTap(c.tap); err != nil {
			break
		}
		if c.delay, err = parseDuration("delay", args[1]); err != nil {
			break
		}
		c.jitter, err = parseDuration("jitter", args[2])
	case "clear":
		if err = want(1, 1, "clear TAP"); err == nil {
			c.tap = args[0]
			err = checkTap(c.tap)
		}
	case "show":
		if err = want(0, 1, "show [TAP]"); err == nil && len(args) == 1 {
			c.tap = args[0]
			err = checkTap(c.tap)
		}
	default:
		err = fmt.Errorf("unknown command %.40q (ping, set, clear, show)", c.verb)
	}
	if err != nil {
		return command{}, err
	}
	return c, nil
}

// ascii is d as time.Duration writes it, with us for µs.
func ascii(d time.Duration) string { return strings.ReplaceAll(d.String(), "µ", "u") }

func formatStats(tap string, delay, jitter time.Duration, s stats) string {
	return fmt.Sprintf("%s delay=%s jitter=%s frames=%d bytes=%d dropped=%d queued=%d queued_bytes=%d",
		tap, ascii(delay), ascii(jitter), s.Frames, s.Bytes, s.Dropped, s.Queued, s.QueuedBytes)
}

// ---- the daemon ------------------------------------------------------------------------------

// direction is one delayed direction: its tap and the goroutines moving its frames.
type direction struct {
	tap  string
	dev  *os.File
	l    *line
	kick chan struct{}
	stop chan struct{}
	sent chan struct{} // closed when the sender has returned
	read chan struct{} // closed when the reader has returned
}

type daemon struct {
	mu   sync.Mutex
	dirs map[string]*direction
	cap  int
	clk  clock
	logf func(string, ...any)
}

// openTap makes (or attaches to) the tap NAME with virtio-net headers and offloads, and brings it up.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	fail := func(what string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %s: %w", name, what, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("name", err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fail("TUNSETIFF", err)
	}
	// the frames stay whole (GSO) and checksums partial: the kernel has nothing to redo
	offloads := []int{
		unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN | unix.TUN_F_USO4 | unix.TUN_F_USO6,
		unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN,
		unix.TUN_F_CSUM,
		0, // the kernel segments and checksums before the tap
	}
	for _, o := range offloads {
		if err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, o); err == nil {
			break
		}
	}
	if err != nil {
		return fail("TUNSETOFFLOAD", err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	defer unix.Close(s)
	ifr, _ = unix.NewIfreq(name)
	ifr.SetUint32(tapTxQLen)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFTXQLEN, ifr); err != nil {
		return fail("txqueuelen", err)
	}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fail("get flags", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fail("up", err)
	}
	return os.NewFile(uintptr(fd), "tap "+name), nil
}

func (d *daemon) start(tap string, delay, jitter time.Duration) (*direction, error) {
	dev, err := openTap(tap)
	if err != nil {
		return nil, err
	}
	dir := &direction{
		tap:  tap,
		dev:  dev,
		l:    newLine(delay, jitter, d.cap, nil),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		sent: make(chan struct{}),
		read: make(chan struct{}),
	}
	logf := func(f string, a ...any) { d.logf("%s: "+f, append([]any{tap}, a...)...) }
	go func() {
		defer close(dir.sent)
		send(dev, dir.l, d.clk, dir.kick, dir.stop, logf)
	}()
	go func() {
		defer close(dir.read)
		buf := make([]byte, readBuf)
		for {
			n, err := dev.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					logf("read: %v", err)
				}
				return
			}
			if n == 0 {
				continue
			}
			data := make([]byte, n)
			copy(data, buf[:n])
			if ok, wasEmpty := dir.l.push(data, d.clk.Now()); ok && wasEmpty {
				select {
				case dir.kick <- struct{}{}:
				default:
				}
			}
		}
	}()
	return dir, nil
}

func (d *daemon) do(c command) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch c.verb {
	case "ping":
		return fmt.Sprintf("linkdelay pid %d, %d direction(s)", os.Getpid(), len(d.dirs)), nil
	case "set":
		if dir, ok := d.dirs[c.tap]; ok {
			dir.l.set(c.delay, c.jitter)
			// a longer wait computed before is cut short: the sender looks again
			select {
			case dir.kick <- struct{}{}:
			default:
			}
			d.logf("%s: delay %s jitter %s", c.tap, ascii(c.delay), ascii(c.jitter))
			return "", nil
		}
		dir, err := d.start(c.tap, c.delay, c.jitter)
		if err != nil {
			d.logf("%s: %v", c.tap, err)
			return "", err
		}
		d.dirs[c.tap] = dir
		d.logf("%s: made, delay %s jitter %s", c.tap, ascii(c.delay), ascii(c.jitter))
		return "made " + c.tap, nil
	case "clear":
		dir, ok := d.dirs[c.tap]
		if !ok {
			return "not delayed", nil
		}
		delete(d.dirs, c.tap)
		delay, jitter := dir.l.settings()
		s := dir.shutdown()
		d.logf("%s: cleared (%s)", c.tap, formatStats(c.tap, delay, jitter, s))
		return "", nil
	case "show":
		var names []string
		if c.tap != "" {
			if _, ok := d.dirs[c.tap]; !ok {
				return "", fmt.Errorf("%s is not delayed", c.tap)
			}
			names = []string{c.tap}
		} else {
			for n := range d.dirs {
				names = append(names, n)
			}
			sort.Strings(names)
		}
		var b strings.Builder
		for _, n := range names {
			dir := d.dirs[n]
			delay, jitter := dir.l.settings()
			fmt.Fprintln(&b, formatStats(n, delay, jitter, dir.l.stats()))
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	}
	return "", fmt.Errorf("unknown command %q", c.verb)
}

// shutdown stops the sender (which releases the frames held at once), closes the tap (the
// reader returns, and the kernel removes the tap with its last file) and returns the counters.
func (dir *direction) shutdown() stats {
	close(dir.stop)
	<-dir.sent
	_ = dir.dev.Close()
	<-dir.read
	return dir.l.stats()
}

func (d *daemon) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, dir := range d.dirs {
		dir.shutdown()
		delete(d.dirs, n)
	}
}

func (d *daemon) handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(io.LimitReader(conn, 4096))
	s, err := r.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && s != "") {
		fmt.Fprintf(conn, "error: reading the command: %v\n", err)
		return
	}
	c, err := parseCommand(s)
	if err == nil {
		var out string
		out, err = d.do(c)
		if err == nil {
			if out != "" {
				fmt.Fprintf(conn, "ok\n%s\n", out)
			} else {
				fmt.Fprintln(conn, "ok")
			}
			return
		}
	}
	fmt.Fprintf(conn, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	sock := fs.String("sock", "", "control socket (required)")
	pidFile := fs.String("pid", "", "pid file, written once the socket listens")
	logFile := fs.String("log", "", "log file (default stderr)")
	capBytes := fs.Int("cap", defaultCap, "bytes queued at most per direction; frames beyond are dropped")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" || fs.NArg() != 0 {
		return errors.New("usage: linkdelay serve -sock PATH [-pid PATH] [-log PATH] [-cap BYTES]")
	}
	if *capBytes < readBuf {
		return fmt.Errorf("-cap %d: at least %d", *capBytes, readBuf)
	}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		logger.SetOutput(f)
	}
	// a socket left by a daemon that died: nobody answers on it
	if c, err := net.DialTimeout("unix", *sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: a daemon already listens there", *sock)
	}
	_ = os.Remove(*sock)
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	_ = os.Chmod(*sock, 0o600)
	d := &daemon{dirs: map[string]*direction{}, cap: *capBytes, clk: realClock{}, logf: logger.Printf}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			ln.Close()
			return err
		}
	}
	logger.Printf("linkdelay pid %d listening on %s (cap %d bytes per direction)", os.Getpid(), *sock, *capBytes)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		s := <-sig
		logger.Printf("%v: stopping", s)
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			logger.Printf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go d.handle(conn)
	}
	d.closeAll()
	if *pidFile != "" {
		_ = os.Remove(*pidFile)
	}
	logger.Printf("stopped")
	return nil
}

func ctl(args []string) error {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	sock := fs.String("sock", "", "control socket (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" || fs.NArg() == 0 {
		return errors.New("usage: linkdelay ctl -sock PATH COMMAND [ARGS...]")
	}
	line := strings.Join(fs.Args(), " ")
	if _, err := parseCommand(line); err != nil {
		return err
	}
	conn, err := net.DialTimeout("unix", *sock, 5*time.Second)
	if err != nil {
		return fmt.Errorf("the daemon does not answer on %s: %w", *sock, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintln(conn, line); err != nil {
		return err
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	first, rest, _ := strings.Cut(string(out), "\n")
	switch {
	case first == "ok":
		fmt.Print(rest)
		return nil
	case strings.HasPrefix(first, "error: "):
		return errors.New(strings.TrimPrefix(first, "error: "))
	default:
		return fmt.Errorf("unexpected answer from the daemon: %q", out)
	}
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("linkdelay: ")
	if len(os.Args) < 2 {
		log.Fatal("usage: linkdelay serve -sock PATH [-pid PATH] [-log PATH] [-cap BYTES] | ctl -sock PATH COMMAND [ARGS...]")
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "ctl":
		err = ctl(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: serve or ctl", os.Args[1])
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		log.Fatal(err)
	}
}
