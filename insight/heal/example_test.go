package heal_test

import (
	"fmt"
	"time"

	"github.com/tasker-run/tasker/insight"
	"github.com/tasker-run/tasker/insight/heal"
)

func ExampleDecide() {
	p, err := heal.ParsePolicy([]byte(`
enabled: true
rules:
  - action: change_timeout
    min_confidence: 0.7
    max_factor: 2
    max_timeout: 5m
    max_per_hour: 2
`))
	if err != nil {
		panic(err)
	}
	d := heal.Decide(p, heal.Input{
		Workflow: "default/orders",
		Step:     "charge",
		Remediation: insight.Remediation{
			Action:     insight.ActionChangeTimeout,
			Params:     map[string]string{"step": "charge", "timeout": "3m"},
			Confidence: 0.9,
			Source:     "rules",
		},
		FindingConfidence: 0.85,
		CurrentTimeout:    30 * time.Second,
		Now:               time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC),
	})
	fmt.Println(d.Auto, d.Remediation.Params["timeout"])
	fmt.Println(d.Reason)
	// Output:
	// true 1m0s
	// change_timeout on default/orders step charge applies automatically: confidence 0.85 reaches the policy's 0.70, 1 of 2 this hour; timeout clamped from 3m to 1m (max_factor 2 × current 30s)
}
