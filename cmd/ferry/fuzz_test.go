package main

import (
	"errors"
	"testing"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/orchestrator"
)

// FuzzParseDuration: no text crashes the duration flags' parser; what it
// accepts is within the range, and what it refuses is bad input (exit 2).
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "300ms", "2s", "10m", "-1s", "1h1h", "9223372036854775807ns", "2562048h", "1e3s", "", " 5s", "NaNs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, rng := range []orchestrator.DurationRange{orchestrator.RangeMaxDowntime, orchestrator.RangeTimeout, drain.RangeBackoff} {
			d, err := parseDuration("--x", v, rng)
			if err != nil {
				var ue usageError
				if !errors.As(err, &ue) || exitCode(err) != exitRefused {
					t.Fatalf("%q: %v is not a usage error", v, err)
				}
				continue
			}
			if d != 0 && (d < rng.Min || d > rng.Max) || d < 0 {
				t.Fatalf("%q accepted as %s, outside %s..%s", v, d, rng.Min, rng.Max)
			}
		}
	})
}

// FuzzParseBandwidth: an accepted cap converts to a positive byte rate (a
// wrapped one would be "no cap").
func FuzzParseBandwidth(f *testing.F) {
	for _, s := range []string{"0", "100", "100MiB/s", "17592186044416", "18446744073709551615", "18446744073709551616", "-1", "1.5", " 40 ", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		bw, err := parseBandwidth(v)
		if err != nil {
			if exitCode(err) != exitRefused {
				t.Fatalf("%q: %v is not a usage error", v, err)
			}
			return
		}
		if bw > orchestrator.MaxBandwidthMiBps {
			t.Fatalf("%q accepted as %d MiB/s", v, bw)
		}
		if b := orchestrator.BandwidthBytesPerSec(bw); (bw > 0) != (b > 0) || b != int64(bw)<<20 {
			t.Fatalf("%d MiB/s converts to %d bytes/s", bw, b)
		}
	})
}

// FuzzLiveFlags: the live-migration flags together never give a request
// the library would refuse as out of range, and never crash.
func FuzzLiveFlags(f *testing.F) {
	f.Add("300ms", "0", "1s", "0", "abort", false)
	f.Add("1ms", "1048576", "2000s", "168h", "postcopy", true)
	f.Add("0", "17592186044416", "1h", "1ns", "pause", false)
	f.Fuzz(func(t *testing.T, md, bw, ceil, ct, onTimeout string, postcopy bool) {
		l := liveFlags{maxDowntime: md, bandwidth: bw, ceiling: ceil, completion: ct, onTimeout: onTimeout, postcopy: postcopy}
		r, err := l.parse()
		if err != nil {
			if exitCode(err) != exitRefused {
				t.Fatalf("%+v: %v is not a usage error", l, err)
			}
			return
		}
		for _, err := range []error{
			orchestrator.RangeMaxDowntime.Check("md", r.Live.MaxDowntime),
			orchestrator.RangeDowntimeCeiling.Check("ceil", r.Live.DowntimeCeiling),
			orchestrator.RangeCompletionTimeout.Check("ct", r.Live.CompletionTimeout),
			orchestrator.RangeBandwidthMiBps.CheckUint("bw", r.BandwidthMiBps),
		} {
			if err != nil {
				t.Fatalf("%+v accepted: %v", l, err)
			}
		}
		if r.Live.DowntimeCeiling > 0 && r.Live.DowntimeCeiling < r.Live.MaxDowntime {
			t.Fatalf("ceiling %s below max downtime %s", r.Live.DowntimeCeiling, r.Live.MaxDowntime)
		}
	})
}
