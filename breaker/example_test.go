package breaker_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/tasker-run/tasker/breaker"
)

func Example() {
	cfg, err := breaker.ParseConfig([]byte(`
policies:
  timeouts:
    general: 5s
  retries:
    standard: {initialInterval: 100ms, maxInterval: 5s, multiplier: 2, jitter: 0.2, maxRetries: 3}
  circuitBreakers:
    agents: {maxRequests: 1, interval: 30s, timeout: 60s, trip: consecutiveFailures > 5}
defaults: {timeout: general, retry: standard, circuitBreaker: agents}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	set, err := breaker.NewSet(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	errInvalid := errors.New("invalid card number")
	_, err = breaker.Do(context.Background(), set, breaker.Target("agent-b", "payments.charge"),
		func(ctx context.Context) (string, error) {
			return "", breaker.MarkPermanent(errInvalid) // not retried, not held against agent-b
		})
	fmt.Println(errors.Is(err, errInvalid), errors.Is(err, breaker.ErrOpen))
	for _, st := range set.Snapshot() {
		fmt.Println(st.Target, st.State, st.Counts.Failures)
	}
	// Output:
	// true false
	// agent-b/payments.charge closed 0
}

func ExampleConfig_Validate() {
	_, err := breaker.ParseConfig([]byte(`
policies:
  circuitBreakers:
    cb: {maxRequests: 1, timeout: 30s, trip: failureRatio > 0.5}
`))
	fmt.Println(err)
	// Output:
	// policies.circuitBreakers.cb.minRequests: must be between 1 and 100000 with a failureRatio trip, got 0
}
