package insight

import (
	"math"
	"slices"
	"time"
)

// Percentiles are order statistics of a set of durations.
type Percentiles struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// percentile is the nearest-rank percentile of sorted (ascending): the
// smallest value with at least q of the values at or below it. Nearest
// rank never invents a duration nobody measured, which matters when a
// proposed timeout is compared with real runs.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// percentiles sorts a copy of ds and reads its percentiles.
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Percentiles{N: len(s), P50: percentile(s, 0.50), P95: percentile(s, 0.95), P99: percentile(s, 0.99), Max: s[len(s)-1]}
}

// roundUp rounds d up to a unit people write in a manifest: whole seconds
// under 10 s, 5 s under a minute, 30 s under 5 min, whole minutes under
// 20 min, 5 min beyond.
func roundUp(d time.Duration) time.Duration {
	var unit time.Duration
	switch {
	case d <= 0:
		return 0
	case d < 10*time.Second:
		unit = time.Second
	case d < time.Minute:
		unit = 5 * time.Second
	case d < 5*time.Minute:
		unit = 30 * time.Second
	case d < 20*time.Minute:
		unit = time.Minute
	default:
		unit = 5 * time.Minute
	}
	return (d + unit - 1) / unit * unit
}

// clamp01 keeps a confidence in [0, 1], rounded to two decimals so that
// the same evidence always prints the same figure.
func clamp01(x float64) float64 {
	x = math.Max(0, math.Min(1, x))
	return math.Round(x*100) / 100
}

// fmtDur prints a duration the way a manifest would write it.
func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d >= time.Second {
		d = d.Round(100 * time.Millisecond)
	} else {
		d = d.Round(time.Millisecond)
	}
	s := d.String()
	// "2m0s" reads better as "2m".
	for _, suf := range []string{"m0s", "h0m"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-len(suf)+1]
		}
	}
	return s
}
