package drain

import (
	"fmt"
	"time"

	"github.com/ferryvm/ferry/orchestrator"
)

// MaxParallel bounds a drain's moves in flight (overall and per target).
const MaxParallel = 64

// The ranges of a drain's numbers (the moves' own are orchestrator's).
var (
	RangeParallel     = orchestrator.Range{Min: 1, Max: MaxParallel, Zero: fmt.Sprintf("the default, %d", DefaultParallel)}
	RangeMaxPerTarget = orchestrator.Range{Min: 1, Max: MaxParallel, Zero: fmt.Sprintf("the default, %d", DefaultMaxPerTarget)}
	RangeRetries      = orchestrator.Range{Min: 0, Max: 100}
	RangeBackoff      = orchestrator.DurationRange{Min: time.Millisecond, Max: time.Hour, Zero: "the default, " + DefaultBackoff.String()}
)

// CheckRanges checks a request's numbers (after its defaults), flag names
// as the CLI has them; every number a drain sizes something from is here.
func (r Request) CheckRanges() error {
	for _, c := range []struct {
		field string
		rng   orchestrator.Range
		v     int
	}{
		{"--parallel", RangeParallel, r.Parallel},
		{"--max-per-target", RangeMaxPerTarget, r.MaxPerTarget},
		{"--retries", RangeRetries, r.Retries},
	} {
		if err := c.rng.Check(c.field, int64(c.v)); err != nil {
			return err
		}
	}
	if err := RangeBackoff.Check("--backoff", r.Backoff); err != nil {
		return err
	}
	return r.moveTemplate(orchestrator.KindLive).CheckRanges()
}

// moveTemplate is the request every move of the drain starts from.
func (r Request) moveTemplate(kind string) orchestrator.Request {
	return orchestrator.Request{Kind: kind, Live: r.Live, BandwidthMiBps: r.BandwidthMiBps}
}
