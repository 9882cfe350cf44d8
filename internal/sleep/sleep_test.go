package sleep

import (
	"context"
	"testing"
	"time"
)

func TestFor(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		d    time.Duration
		want bool
	}{
		{"waits", context.Background(), time.Millisecond, true},
		{"zero", context.Background(), 0, true},
		{"ended context, zero", cancelled, 0, false},
		// A cancelled context must not wait out an hour.
		{"ended context, long", cancelled, time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := For(tt.ctx, tt.d); got != tt.want {
				t.Fatalf("For(%v) = %v, want %v", tt.d, got, tt.want)
			}
		})
	}
}
