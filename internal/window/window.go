// Package window parses the look-back windows operators give the
// analyses ("7d", "36h"), the same way in every front end: the CLI and
// the MCP server.
package window

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxDays bounds a window given in days.
const MaxDays = 3650

// Parse reads a window: a number of days ("7d"), which Go durations lack
// and operators think in, or a positive Go duration ("36h", "90m").
func Parse(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > MaxDays {
			return 0, fmt.Errorf("%q is not a window: use days (7d, 1 to %d) or a duration (36h, 90m)", s, MaxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a window: use days (7d) or a positive duration (36h, 90m)", s)
	}
	return d, nil
}
