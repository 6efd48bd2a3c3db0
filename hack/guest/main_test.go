package main

import (
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config
		errs int
	}{
		{"", config{"guest", 16, 0}, 0},
		{"console=ttyS0 quiet ferry.name=web-01 ferry.wss=256 ferry.rate=20000\n", config{"web-01", 256, 20000}, 0},
		{"ferry.wss=0 ferry.rate=0 ferry.name=", config{"guest", 0, 0}, 0},
		{"ferry.wss=big ferry.rate=-3 ferry.name=x", config{"x", 16, 0}, 2},
		{"ferry.wssx=3 ferry.rate ferry.name=a=b", config{"a=b", 16, 0}, 0},
	} {
		got, errs := parseCmdline(tc.in)
		if got != tc.want || len(errs) != tc.errs {
			t.Errorf("parseCmdline(%q) = %+v, %v; want %+v with %d errors", tc.in, got, errs, tc.want, tc.errs)
		}
	}
}

func TestStampVerify(t *testing.T) {
	page := make([]byte, pageSize)
	if _, ok := verify(page, stamp{0, 0}); ok {
		t.Fatal("a zero page must not verify (the tail carries the magic)")
	}
	writeStamp(page, stamp{7, 3})
	if got, ok := verify(page, stamp{7, 3}); !ok || got != (stamp{7, 3}) {
		t.Fatalf("verify fresh stamp = %v, %v", got, ok)
	}
	if got, ok := verify(page, stamp{7, 4}); ok || got != (stamp{7, 3}) {
		t.Fatalf("verify wrong generation = %v, %v", got, ok)
	}
	page[pageSize-1] ^= 1 // tail damaged, head intact
	if _, ok := verify(page, stamp{7, 3}); ok {
		t.Fatal("damaged tail verified")
	}
}

func TestWorkingSetSweeps(t *testing.T) {
	var bad []int
	ws := newWorkingSet(make([]byte, 4*pageSize), func(p int, _, _ stamp) { bad = append(bad, p) })
	ws.verifyAll()
	for i := 0; i < 10; i++ { // 2.5 sweeps
		ws.dirty()
		ws.verifyAll()
	}
	if len(bad) != 0 || ws.corrupt != 0 || ws.dirtied != 10 {
		t.Fatalf("clean run: bad=%v corrupt=%d dirtied=%d", bad, ws.corrupt, ws.dirtied)
	}
	// page 1 has been written in sweeps 1 and 2: roll it back to sweep 1 (a lost write).
	writeStamp(ws.page(1), stamp{1, 1})
	ws.verifyAll()
	if len(bad) != 1 || bad[0] != 1 || ws.corrupt != 1 {
		t.Fatalf("lost write: bad=%v corrupt=%d", bad, ws.corrupt)
	}
	// a page carrying another page's stamp (misplaced copy) is caught when dirtied.
	copy(ws.page(2), ws.page(3))
	ws.dirty() // pos 2
	if ws.corrupt != 2 || bad[1] != 2 {
		t.Fatalf("misplaced page: bad=%v corrupt=%d", bad, ws.corrupt)
	}
	empty := newWorkingSet(nil, nil)
	empty.dirty()
	empty.verifyAll()
	if empty.dirtied != 0 || empty.corrupt != 0 {
		t.Fatal("empty working set counted something")
	}
}

func TestPacer(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := newPacer(20000, t0)
	total := 0
	for i := 1; i <= 100; i++ { // 1 s in 10 ms steps
		total += p.due(t0.Add(time.Duration(i) * 10 * time.Millisecond))
	}
	if total != 20000 {
		t.Fatalf("20000 pages/s over 1 s gave %d", total)
	}
	if n := p.due(t0.Add(time.Hour)); n != 400 {
		t.Fatalf("after a long pause due = %d, want the 20 ms cap 400", n)
	}
	// throttled: runs 10 ms, sleeps 90 ms (QEMU cpu-throttle 90%): ~20% of the rate, not all of it
	th, thr := newPacer(20000, t0), 0
	for ms := 0; ms < 1000; ms += 100 {
		thr += th.due(t0.Add(time.Duration(ms+90) * time.Millisecond))  // wakes after the sleep
		thr += th.due(t0.Add(time.Duration(ms+100) * time.Millisecond)) // end of its 10 ms slice
	}
	if thr != 10*(400+200) {
		t.Fatalf("throttled 90%% for 1 s gave %d pages", thr)
	}
	slow := newPacer(3, t0)
	got := 0
	for i := 1; i <= 100; i++ {
		got += slow.due(t0.Add(time.Duration(i) * 10 * time.Millisecond))
	}
	if got != 3 {
		t.Fatalf("3 pages/s over 1 s gave %d", got)
	}
}
