// Command guest is the /init of the ferry lab guest (see DESIGN.md §8).
//
// It mounts devtmpfs and proc, reads its parameters from the kernel command
// line, allocates a working set and dirties it at a fixed rate while checking
// that memory survives migrations intact:
//
//	ferry.name=<string>   name printed in every line (default "guest")
//	ferry.wss=<MiB>       working set size (default 16)
//	ferry.rate=<pages/s>  4 KiB pages dirtied per second (default 0 = idle)
//
// Pages are visited in order, sweep after sweep. Each write stamps the page
// with (page index, generation); each visit first verifies the stamp the
// previous visit left and prints "CORRUPT page=N want=... got=..." on a
// mismatch. When idle, the whole working set is verified once a second
// (reads only, nothing is dirtied). Every 250 ms it prints
//
//	ferry-guest heartbeat n=<counter> name=<name> dirtied=<pages> corrupt=<count>
//
// PID 1 must never exit, so every error is reported and the program keeps going.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	pageSize  = 4096
	magic     = 0xfe77_9a11_5eed_0001 // xored into the trailer copy of the stamp
	heartbeat = 250 * time.Millisecond
	tick      = 10 * time.Millisecond
	// at most this many CORRUPT lines per heartbeat (the serial port is slow); all are counted
	maxReports = 8
)

// config is what the kernel command line asks for.
type config struct {
	Name   string
	WSSMiB int
	Rate   int // pages per second, 0 = idle
}

// parseCmdline reads ferry.name, ferry.wss and ferry.rate from a kernel command
// line. Unknown or malformed values keep the defaults and are reported in errs.
func parseCmdline(cmdline string) (cfg config, errs []string) {
	cfg = config{Name: "guest", WSSMiB: 16}
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "ferry.name":
			if v != "" {
				cfg.Name = v
			}
		case "ferry.wss", "ferry.rate":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Sprintf("bad %s=%q, using default", k, v))
				continue
			}
			if k == "ferry.wss" {
				cfg.WSSMiB = n
			} else {
				cfg.Rate = n
			}
		}
	}
	return cfg, errs
}

// stamp is what a page carries: its index and the generation of the last write.
type stamp struct{ Index, Gen uint64 }

func (s stamp) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Gen) }

// writeStamp stamps a page at its head and (xored with magic) at its tail, so
// that a page that is only partly transferred is caught too.
func writeStamp(page []byte, s stamp) {
	binary.LittleEndian.PutUint64(page[0:], s.Index)
	binary.LittleEndian.PutUint64(page[8:], s.Gen)
	binary.LittleEndian.PutUint64(page[pageSize-16:], s.Index^magic)
	binary.LittleEndian.PutUint64(page[pageSize-8:], s.Gen^magic)
}

// readStamp returns the head stamp of a page and whether the tail agrees with it.
func readStamp(page []byte) (stamp, bool) {
	s := stamp{binary.LittleEndian.Uint64(page[0:]), binary.LittleEndian.Uint64(page[8:])}
	ti := binary.LittleEndian.Uint64(page[pageSize-16:]) ^ magic
	tg := binary.LittleEndian.Uint64(page[pageSize-8:]) ^ magic
	return s, ti == s.Index && tg == s.Gen
}

// verify reports whether page carries exactly want (head and tail).
func verify(page []byte, want stamp) (got stamp, ok bool) {
	got, consistent := readStamp(page)
	return got, consistent && got == want
}

// workingSet is the memory under test. Pages are written in order: pos is
// the next page to write and sweep the generation pages before pos already
// carry; pages from pos on carry sweep-1. Generation 0 is the initial fill.
type workingSet struct {
	mem     []byte
	pages   int
	pos     int
	sweep   uint64
	dirtied uint64
	corrupt uint64
	report  func(page int, want, got stamp)
}

func newWorkingSet(mem []byte, report func(int, stamp, stamp)) *workingSet {
	w := &workingSet{mem: mem, pages: len(mem) / pageSize, report: report}
	for i := 0; i < w.pages; i++ {
		writeStamp(w.page(i), stamp{uint64(i), 0})
	}
	w.sweep = 1
	return w
}

func (w *workingSet) page(i int) []byte { return w.mem[i*pageSize : (i+1)*pageSize] }

// expected is the stamp page i must carry now.
func (w *workingSet) expected(i int) stamp {
	if i < w.pos {
		return stamp{uint64(i), w.sweep}
	}
	return stamp{uint64(i), w.sweep - 1}
}

func (w *workingSet) check(i int) {
	want := w.expected(i)
	if got, ok := verify(w.page(i), want); !ok {
		w.corrupt++
		if w.report != nil {
			w.report(i, want, got)
		}
	}
}

// dirty verifies the next page and writes it with the current generation.
func (w *workingSet) dirty() {
	if w.pages == 0 {
		return
	}
	w.check(w.pos)
	writeStamp(w.page(w.pos), stamp{uint64(w.pos), w.sweep})
	w.dirtied++
	w.pos++
	if w.pos == w.pages {
		w.pos, w.sweep = 0, w.sweep+1
	}
}

// verifyAll checks every page without writing.
func (w *workingSet) verifyAll() {
	for i := 0; i < w.pages; i++ {
		w.check(i)
	}
}

// pacer turns elapsed time into a number of pages to dirty, forgetting debt
// beyond maxBurst pages (two ticks' worth) so a guest that was paused, starved
// or throttled (QEMU auto-converge) does not catch up afterwards: like a
// CPU-bound workload, it dirties less when it gets less CPU. Integer
// arithmetic: owed is in pages*ns.
type pacer struct {
	rate     int64
	owed     int64
	maxBurst int64
	last     time.Time
}

func newPacer(rate int, now time.Time) *pacer {
	b := int64(rate) * int64(2*tick) / int64(time.Second)
	if b < 1 {
		b = 1
	}
	return &pacer{rate: int64(rate), maxBurst: b, last: now}
}

func (p *pacer) due(now time.Time) int {
	d := now.Sub(p.last)
	p.last = now
	if d < 0 {
		d = 0
	}
	if d > time.Second { // keeps d*rate far from overflowing; the cap below is smaller anyway
		d = time.Second
	}
	p.owed += int64(d) * p.rate
	n := p.owed / int64(time.Second)
	if n > p.maxBurst {
		n, p.owed = p.maxBurst, 0
	} else {
		p.owed -= n * int64(time.Second)
	}
	return int(n)
}

func mountAll(log io.Writer) {
	for _, m := range []struct{ src, dst, fs string }{{"devtmpfs", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := syscall.Mount(m.src, m.dst, m.fs, 0, ""); err != nil && err != syscall.EBUSY {
			fmt.Fprintf(log, "ferry-guest mount %s: %v\n", m.dst, err)
		}
	}
}

func openConsole() *os.File {
	for _, p := range []string{"/dev/ttyS0", "/dev/console"} {
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
			// Go runtime messages (panics) go to fds 1 and 2: point them at the console too.
			_ = syscall.Dup3(int(f.Fd()), 1, 0)
			_ = syscall.Dup3(int(f.Fd()), 2, 0)
			return f
		}
	}
	return os.Stderr
}

func main() {
	mountAll(os.Stderr)
	out := openConsole()
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		fmt.Fprintf(out, "ferry-guest read /proc/cmdline: %v\n", err)
	}
	cfg, errs := parseCmdline(string(raw))
	for _, e := range errs {
		fmt.Fprintf(out, "ferry-guest %s\n", e)
	}
	fmt.Fprintf(out, "ferry-guest boot name=%s wss=%d rate=%d\n", cfg.Name, cfg.WSSMiB, cfg.Rate)

	var mem []byte
	if cfg.WSSMiB > 0 {
		mem, err = syscall.Mmap(-1, 0, cfg.WSSMiB<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			fmt.Fprintf(out, "ferry-guest mmap %d MiB: %v (running without a working set)\n", cfg.WSSMiB, err)
			mem = nil
		}
	}
	reports := 0
	ws := newWorkingSet(mem, func(page int, want, got stamp) {
		if reports < maxReports {
			reports++
			fmt.Fprintf(out, "CORRUPT page=%d want=%s got=%s\n", page, want, got)
		}
	})
	run(out, cfg, ws, &reports)
}

func run(out io.Writer, cfg config, ws *workingSet, reports *int) {
	now := time.Now()
	p := newPacer(cfg.Rate, now)
	nextBeat := now.Add(heartbeat)
	var n uint64
	for {
		now = time.Now()
		if cfg.Rate > 0 {
			for k := p.due(now); k > 0; k-- {
				ws.dirty()
			}
		}
		if !now.Before(nextBeat) {
			n++
			if cfg.Rate == 0 && n%4 == 0 {
				ws.verifyAll()
			}
			fmt.Fprintf(out, "ferry-guest heartbeat n=%d name=%s dirtied=%d corrupt=%d\n", n, cfg.Name, ws.dirtied, ws.corrupt)
			*reports = 0
			nextBeat = nextBeat.Add(heartbeat)
			if nextBeat.Before(now) { // paused or starved: do not print a burst of beats
				nextBeat = now.Add(heartbeat)
			}
		}
		sleep := tick
		if cfg.Rate == 0 {
			sleep = time.Until(nextBeat)
		}
		if sleep > 0 {
			time.Sleep(sleep)
		}
	}
}
