package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/workflow"
)

// pushRequest is the body the agent POSTs to an app's push URL. It is
// documented in docs/sdk.md; change it only by adding fields.
type pushRequest struct {
	TaskID          string          `json:"task_id"`
	Step            string          `json:"step"`
	Capability      string          `json:"capability"`
	Attempt         int             `json:"attempt"`
	Input           json.RawMessage `json:"input"`
	IdempotencyKey  string          `json:"idempotency_key"`
	Deadline        time.Time       `json:"deadline"`
	Workflow        string          `json:"workflow"`
	WorkflowVersion string          `json:"workflow_version"`
}

// pushError is the optional JSON body of a failure response.
type pushError struct {
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Retryable *bool           `json:"retryable"`
	Details   json.RawMessage `json:"details"`
}

// pushAsync delivers an attempt to an app by HTTP POST and reports the
// outcome: 2xx is the result; 429 and 503 are retryable and honour
// Retry-After; other 4xx are permanent; 5xx and network errors are
// retryable; no answer before the deadline is a timeout.
func (a *Agent) pushAsync(asg *consensus.Assignment, url, worker string) {
	k := leaseKey{asg.TaskID, asg.Step, asg.Attempt}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		ctx, cancel := context.WithDeadline(a.streams, asg.Deadline)
		defer cancel()
		body, _ := json.Marshal(pushRequest{
			TaskID: asg.TaskID, Step: asg.Step, Capability: asg.Capability, Attempt: asg.Attempt,
			Input: json.RawMessage(asg.InputJSON), IdempotencyKey: asg.IdempotencyKey, Deadline: asg.Deadline,
			Workflow: asg.Workflow, WorkflowVersion: asg.WorkflowVersion,
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			a.failAsync(k, "push_failed", err.Error(), false)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		if a.tel.Tracing {
			if tp := a.asgTraces.take(asg); tp != "" {
				// W3C trace context: the app's HTTP instrumentation continues it.
				req.Header.Set("traceparent", tp)
			}
		}
		req.Header.Set("Tasker-Idempotency-Key", asg.IdempotencyKey)
		req.Header.Set("Tasker-Attempt", strconv.Itoa(asg.Attempt))
		a.startAsync(k, worker)
		resp, err := a.push.Do(req)
		if err != nil {
			switch {
			case a.streams.Err() != nil:
				a.releaseAsync(k, "agent shutting down")
			case errors.Is(err, context.DeadlineExceeded):
				a.failAsync(k, workflow.CodeTimeout, "push handler did not answer before the deadline", true)
			default:
				a.failAsync(k, "unreachable", fmt.Sprintf("push to worker %s: %v", worker, err), true)
			}
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(a.cfg.MaxPayloadBytes)+1))
		if err != nil {
			a.failAsync(k, "unreachable", fmt.Sprintf("read push response: %v", err), true)
			return
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if len(raw) > a.cfg.MaxPayloadBytes {
				a.failAsync(k, workflow.CodeContractViolation, fmt.Sprintf("result is over the payload limit of %d bytes", a.cfg.MaxPayloadBytes), false)
				return
			}
			result := strings.TrimSpace(string(raw))
			if result == "" {
				result = "{}"
			}
			if err := a.complete(rctx, k, result, worker); err != nil {
				a.log.WarnContext(a.taskLog(rctx, k.task), "push result not accepted", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", logSafe(err))
			}
			return
		}
		var pe pushError
		_ = json.Unmarshal(raw, &pe)
		fromApp := pe.Code != "" // the app's own error object, not a bare status
		if pe.Code == "" {
			pe.Code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		if pe.Message == "" {
			pe.Message = strings.TrimSpace(string(raw[:min(len(raw), 512)]))
		}
		retryable := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 500
		if pe.Retryable != nil {
			retryable = *pe.Retryable
		}
		details := ""
		if d := strings.TrimSpace(string(pe.Details)); d != "" && d != "null" {
			details = d
		}
		if _, err := a.fail(rctx, k, failReport{worker: worker, code: pe.Code, message: pe.Message, retryable: retryable, retryAfter: retryAfter(resp.Header.Get("Retry-After"), a.now()), details: details, fromApp: fromApp}); err != nil {
			a.log.WarnContext(a.taskLog(rctx, k.task), "push failure not recorded", "task_id", k.task, "step", k.step, "attempt", k.attempt, "err", err)
		}
	}()
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
