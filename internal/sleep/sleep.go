// Package sleep waits for a duration or for a context to end, whichever
// comes first: the wait of every retry loop in Tasker.
package sleep

import (
	"context"
	"time"
)

// For waits d and reports true, or returns false as soon as ctx ends. A d
// of zero or less returns at once, false only if ctx has ended.
func For(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
