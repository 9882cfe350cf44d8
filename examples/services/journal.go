package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// execution is one line of the -log journal: one execution of one attempt
// of a step, written when the handler returns and before its outcome is
// reported to the sidecar. Several processes may append to one file: each
// line is a single write to a file opened with O_APPEND.
type execution struct {
	// Time is when the execution began.
	Time       time.Time `json:"time"`
	TaskID     string    `json:"task_id"`
	Step       string    `json:"step"`
	Capability string    `json:"capability"`
	Attempt    int       `json:"attempt"`
	DurationMS float64   `json:"duration_ms"`
	// Outcome is "ok"; "interrupted" when the step's context ended before
	// the work was done (the lease was lost, the deadline passed or the
	// drain timed out), so nothing was done; else the error code.
	Outcome string `json:"outcome"`
	// Result is the result as sent to the sidecar, byte for byte.
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	PID    int             `json:"pid"`
}

// outcomeInterrupted is the outcome of an execution that did nothing.
const outcomeInterrupted = "interrupted"

// journal appends executions to a file.
type journal struct {
	mu sync.Mutex
	f  *os.File
}

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("execution log: %w", err)
	}
	return &journal{f: f}, nil
}

// record appends e; a nil journal records nothing.
func (j *journal) record(e execution) error {
	if j == nil {
		return nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode execution: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("execution log: %w", err)
	}
	return nil
}

// Close closes the file; a nil journal does nothing.
func (j *journal) Close() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.f.Close()
}
