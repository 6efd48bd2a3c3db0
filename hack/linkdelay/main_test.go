package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fixedRand(v int64) func(int64) int64 {
	return func(n int64) int64 {
		if v >= n {
			return n - 1
		}
		return v
	}
}

func TestLineDelay(t *testing.T) {
	l := newLine(50*time.Millisecond, 0, 1<<20, nil)
	if _, wait, ok := l.next(t0); ok || wait != -1 {
		t.Fatalf("empty line: ok=%v wait=%v, want nothing and -1", ok, wait)
	}
	if ok, wasEmpty := l.push([]byte("a"), t0); !ok || !wasEmpty {
		t.Fatalf("push a: accepted=%v wasEmpty=%v", ok, wasEmpty)
	}
	if ok, wasEmpty := l.push([]byte("b"), t0.Add(10*time.Millisecond)); !ok || wasEmpty {
		t.Fatalf("push b: accepted=%v wasEmpty=%v", ok, wasEmpty)
	}
	if _, wait, ok := l.next(t0.Add(20 * time.Millisecond)); ok || wait != 30*time.Millisecond {
		t.Fatalf("at 20ms: ok=%v wait=%v, want a due in 30ms", ok, wait)
	}
	if d, _, ok := l.next(t0.Add(50 * time.Millisecond)); !ok || string(d) != "a" {
		t.Fatalf("at 50ms: %q %v, want a", d, ok)
	}
	if _, wait, ok := l.next(t0.Add(50 * time.Millisecond)); ok || wait != 10*time.Millisecond {
		t.Fatalf("at 50ms after a: ok=%v wait=%v, want b due in 10ms", ok, wait)
	}
	if d, _, ok := l.next(t0.Add(time.Second)); !ok || string(d) != "b" {
		t.Fatalf("at 1s: %q %v, want b", d, ok)
	}
	s := l.stats()
	if s.Frames != 2 || s.Bytes != 2 || s.Queued != 0 || s.QueuedBytes != 0 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Jitter: each frame's delay lies in [delay-jitter, delay+jitter], the extremes are reached, and
// a frame never leaves before the one ahead of it.
func TestLineJitterBoundsAndOrder(t *testing.T) {
	const delay, jitter = 10 * time.Millisecond, 4 * time.Millisecond
	for _, tc := range []struct {
		name string
		rnd  func(int64) int64
		want time.Duration
	}{
		{"low", fixedRand(0), delay - jitter},
		{"high", fixedRand(1 << 62), delay + jitter},
		{"middle", fixedRand(int64(jitter)), delay},
	} {
		l := newLine(delay, jitter, 1<<20, tc.rnd)
		l.push([]byte{1}, t0)
		if _, wait, _ := l.next(t0); wait != tc.want {
			t.Errorf("%s: delay %v, want %v", tc.name, wait, tc.want)
		}
	}

	// the real random source: frames 100us apart (most wait behind an earlier one), then 10ms
	// apart (more than 2*jitter: none does, the delays spread over the whole range)
	for _, gap := range []time.Duration{100 * time.Microsecond, 10 * time.Millisecond} {
		l := newLine(delay, jitter, 1<<30, nil)
		var arrivals []time.Time
		for i := 0; i < 20000; i++ {
			at := t0.Add(time.Duration(i) * gap)
			arrivals = append(arrivals, at)
			if ok, _ := l.push([]byte{byte(i), byte(i >> 8)}, at); !ok {
				t.Fatalf("frame %d refused", i)
			}
		}
		prev := t0
		lo, hi := time.Hour, time.Duration(0)
		for i := 0; i < len(arrivals); i++ {
			due := prev
			data, wait, ok := l.next(prev)
			if !ok {
				due = prev.Add(wait)
				data, _, ok = l.next(due)
			}
			if !ok || int(data[0])|int(data[1])<<8 != i&0xffff {
				t.Fatalf("gap %v, frame %d: got %v (ok %v): out of order", gap, i, data, ok)
			}
			// held behind an earlier frame at worst: that one left by its arrival + delay + jitter
			d := due.Sub(arrivals[i])
			if d < delay-jitter || d > delay+jitter {
				t.Fatalf("gap %v, frame %d delayed %v, outside [%v, %v]", gap, i, d, delay-jitter, delay+jitter)
			}
			lo, hi = min(lo, d), max(hi, d)
			prev = due
		}
		if gap > 2*jitter && (lo > delay-jitter+100*time.Microsecond || hi < delay+jitter-100*time.Microsecond) {
			t.Errorf("gap %v: delays spread over [%v, %v]; want near [%v, %v]", gap, lo, hi, delay-jitter, delay+jitter)
		}
	}
}

// A frame whose draw would put it ahead of the frame before waits for it.
func TestLineNoReorder(t *testing.T) {
	draws := []int64{2000, 0} // +1ms (of jitter 1ms), then -1ms
	i := 0
	rnd := func(n int64) int64 { v := draws[i%len(draws)]; i++; return v * int64(time.Microsecond) % n }
	l := newLine(5*time.Millisecond, time.Millisecond, 1<<20, rnd)
	l.push([]byte("first"), t0)                            // due 6ms
	l.push([]byte("second"), t0.Add(100*time.Microsecond)) // drawn 4.1ms: held to 6ms
	if d, _, ok := l.next(t0.Add(6 * time.Millisecond)); !ok || string(d) != "first" {
		t.Fatalf("at 6ms: %q %v", d, ok)
	}
	if d, _, ok := l.next(t0.Add(6 * time.Millisecond)); !ok || string(d) != "second" {
		t.Fatalf("at 6ms: %q %v, want second right behind first", d, ok)
	}
}

// A change of delay applies to frames that arrive after it; a shorter delay does not let a frame
// overtake one held longer.
func TestLineSetKeepsOrder(t *testing.T) {
	l := newLine(100*time.Millisecond, 0, 1<<20, nil)
	l.push([]byte("slow"), t0)
	l.set(time.Millisecond, 0)
	l.push([]byte("fast"), t0.Add(time.Millisecond))
	if _, wait, ok := l.next(t0.Add(50 * time.Millisecond)); ok || wait != 50*time.Millisecond {
		t.Fatalf("at 50ms: ok=%v wait=%v, want slow in 50ms", ok, wait)
	}
	if d, _, _ := l.next(t0.Add(100 * time.Millisecond)); string(d) != "slow" {
		t.Fatalf("got %q, want slow", d)
	}
	if d, _, _ := l.next(t0.Add(100 * time.Millisecond)); string(d) != "fast" {
		t.Fatalf("got %q, want fast", d)
	}
	l.push([]byte("later"), t0.Add(time.Second))
	if _, wait, _ := l.next(t0.Add(time.Second)); wait != time.Millisecond {
		t.Fatalf("a frame after the change waits %v, want 1ms", wait)
	}
	if d, j := l.settings(); d != time.Millisecond || j != 0 {
		t.Fatalf("settings %v %v", d, j)
	}
}

func TestLineCap(t *testing.T) {
	l := newLine(time.Second, 0, 1000, nil)
	for i := 0; i < 3; i++ {
		if ok, _ := l.push(make([]byte, 300), t0); !ok {
			t.Fatalf("frame %d refused under the cap", i)
		}
	}
	if ok, _ := l.push(make([]byte, 101), t0); ok {
		t.Fatal("a frame over the cap was accepted")
	}
	if ok, _ := l.push(make([]byte, 100), t0); !ok {
		t.Fatal("a frame filling the cap exactly was refused")
	}
	s := l.stats()
	if s.Dropped != 1 || s.Frames != 4 || s.QueuedBytes != 1000 || s.Queued != 4 {
		t.Fatalf("stats %+v", s)
	}
	// room again once a frame left
	if _, _, ok := l.next(t0.Add(time.Second)); !ok {
		t.Fatal("nothing due after 1s")
	}
	if ok, _ := l.push(make([]byte, 300), t0.Add(time.Second)); !ok {
		t.Fatal("refused after room was made")
	}
	if got := len(l.flush()); got != 4 {
		t.Fatalf("flush gave %d frames, want 4", got)
	}
	if s := l.stats(); s.Queued != 0 || s.QueuedBytes != 0 {
		t.Fatalf("after flush %+v", s)
	}
}

// Many frames through one line: the queue's storage is compacted and nothing is lost or reordered.
func TestLineCompaction(t *testing.T) {
	l := newLine(0, 0, 1<<30, nil)
	n, pushed := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < 3000; i++ {
			l.push([]byte{byte(pushed)}, t0)
			pushed++
		}
		for i := 0; i < 2500; i++ {
			d, _, ok := l.next(t0)
			if !ok || d[0] != byte(n) {
				t.Fatalf("round %d: got %v %v, want %d", round, d, ok, byte(n))
			}
			n++
		}
	}
	if s := l.stats(); s.Queued != 50*500 {
		t.Fatalf("queued %d, want %d", s.Queued, 50*500)
	}
	if cap(l.q) > 64*1024 {
		t.Fatalf("the queue's storage grew to %d entries", cap(l.q))
	}
}

func TestParseCommand(t *testing.T) {
	good := map[string]command{
		"ping":                         {verb: "ping"},
		"set dl-h1-h2 50ms 0s\n":       {verb: "set", tap: "dl-h1-h2", delay: 50 * time.Millisecond},
		"set dl-client-h2 500us 100us": {verb: "set", tap: "dl-client-h2", delay: 500 * time.Microsecond, jitter: 100 * time.Microsecond},
		"set dl-h12-client 60s 60s":    {verb: "set", tap: "dl-h12-client", delay: time.Minute, jitter: time.Minute},
		"  clear   dl-h2-h1  ":         {verb: "clear", tap: "dl-h2-h1"},
		"show":                         {verb: "show"},
		"show dl-h1-h2":                {verb: "show", tap: "dl-h1-h2"},
	}
	for in, want := range good {
		got, err := parseCommand(in)
		if err != nil || got != want {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                               "empty",
		"launch":                         "unknown command",
		"ping now":                       "usage: ping",
		"set dl-h1-h2 50ms":              "usage: set",
		"set dl-h1-h2 50ms 0s extra":     "usage: set",
		"set dl-h1-h2 fifty 0s":          "delay \"fifty\"",
		"set dl-h1-h2 50 0s":             "delay \"50\"",
		"set dl-h1-h2 -5ms 0s":           "want 0 to 1m0s",
		"set dl-h1-h2 61s 0s":            "want 0 to 1m0s",
		"set dl-h1-h2 5ms 2h":            "jitter",
		"set dl-h1-h2-and-more-x 5ms 0s": "bad tap name",
		"set ../etc 5ms 0s":              "bad tap name",
		"set -dl 5ms 0s":                 "bad tap name",
		"clear":                          "usage: clear",
		"clear a b":                      "usage: clear",
		"clear dl/h1":                    "bad tap name",
		"show a b":                       "usage: show",
	}
	for in, want := range bad {
		_, err := parseCommand(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseCommand(%q): error %v, want one containing %q", in, err, want)
		}
	}
}

func TestFormatStats(t *testing.T) {
	got := formatStats("dl-h1-h2", 50*time.Millisecond, 5*time.Millisecond, stats{Frames: 3, Bytes: 200, Dropped: 1, Queued: 2, QueuedBytes: 150})
	want := "dl-h1-h2 delay=50ms jitter=5ms frames=3 bytes=200 dropped=1 queued=2 queued_bytes=150"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	got = formatStats("dl-client-h2", 1500*time.Microsecond, 500*time.Microsecond, stats{})
	want = "dl-client-h2 delay=1.5ms jitter=500us frames=0 bytes=0 dropped=0 queued=0 queued_bytes=0"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// fakeClock is moved by the test; After tells the test (waiting) when the sender sleeps.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []fakeTimer
	waiting chan time.Duration
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	c.mu.Unlock()
	c.waiting <- d
	return ch
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if !tm.at.After(c.now) {
			tm.ch <- c.now
		} else {
			kept = append(kept, tm)
		}
	}
	c.timers = kept
}

// chanWriter hands each write to the test.
type chanWriter chan []byte

func (w chanWriter) Write(p []byte) (int, error) {
	w <- bytes.Clone(p)
	return len(p), nil
}

// startSend runs the send loop of l on clk: kick and stop drive it, out gets
// what it writes, done closes when it returns.
func startSend(t *testing.T, l *line, clk *fakeClock) (kick chan struct{}, stop chan struct{}, out chanWriter, done chan struct{}) {
	kick, stop, out, done = make(chan struct{}, 1), make(chan struct{}), make(chanWriter), make(chan struct{})
	go func() {
		defer close(done)
		send(out, l, clk, kick, stop, t.Logf)
	}()
	return kick, stop, out, done
}

func TestSendLoop(t *testing.T) {
	clk := &fakeClock{now: t0, waiting: make(chan time.Duration)}
	l := newLine(20*time.Millisecond, 0, 1<<20, nil)
	l.push([]byte("one"), clk.Now()) // due at 20ms
	_, stop, out, done := startSend(t, l, clk)

	if d := <-clk.waiting; d != 20*time.Millisecond {
		t.Fatalf("sender waits %v, want 20ms", d)
	}
	clk.advance(10 * time.Millisecond)
	l.push([]byte("two"), clk.Now()) // due at 30ms
	select {
	case b := <-out:
		t.Fatalf("%q sent before its time", b)
	default:
	}
	clk.advance(10 * time.Millisecond)
	if b := <-out; string(b) != "one" {
		t.Fatalf("sent %q, want one", b)
	}
	if d := <-clk.waiting; d != 10*time.Millisecond {
		t.Fatalf("sender waits %v, want 10ms for two", d)
	}
	l.push([]byte("three"), clk.Now()) // due at 40ms
	l.push([]byte("four"), clk.Now())
	clk.advance(10 * time.Millisecond)
	if b := <-out; string(b) != "two" {
		t.Fatalf("sent %q, want two", b)
	}
	if d := <-clk.waiting; d != 10*time.Millisecond {
		t.Fatalf("sender waits %v, want 10ms for three", d)
	}
	// stop releases what is held at once, without waiting for its time
	close(stop)
	for _, want := range []string{"three", "four"} {
		if b := <-out; string(b) != want {
			t.Fatalf("flushed %q, want %s", b, want)
		}
	}
	<-done
	if s := l.stats(); s.Queued != 0 || s.Frames != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// An idle sender (empty line, no timer) wakes when kicked.
func TestSendLoopKick(t *testing.T) {
	clk := &fakeClock{now: t0, waiting: make(chan time.Duration, 16)}
	l := newLine(5*time.Millisecond, 0, 1<<20, nil)
	kick, stop, out, done := startSend(t, l, clk)
	if _, wasEmpty := l.push([]byte("one"), clk.Now()); !wasEmpty {
		t.Fatal("the first frame found the line not empty")
	}
	kick <- struct{}{}
	if d := <-clk.waiting; d != 5*time.Millisecond {
		t.Fatalf("sender waits %v, want 5ms", d)
	}
	clk.advance(5 * time.Millisecond)
	if b := <-out; string(b) != "one" {
		t.Fatalf("sent %q, want one", b)
	}
	close(stop)
	<-done
}
