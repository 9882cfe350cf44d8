package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Manifest is a workflow definition exactly as a user writes it, in YAML or
// JSON. It is decoded but not yet checked; Compile turns it into a Plan.
// The authoritative description of its fields is ManifestSchema.
type Manifest struct {
	// Name identifies the workflow within its namespace.
	Name string `json:"name"`
	// Namespace groups workflows; "default" when empty.
	Namespace string `json:"namespace,omitempty"`
	// Version is a semantic version (1.4.0); every apply of a changed
	// workflow carries a new one.
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
	// InputSchema is the JSON Schema every task's input must satisfy.
	InputSchema any `json:"input_schema,omitempty"`
	// Systems names the systems that take part, with the capabilities each
	// owns, as in a manifest shared across teams.
	Systems map[string]System `json:"systems,omitempty"`
	// Defaults apply to every step that does not set its own.
	Defaults *StepDefaults `json:"defaults,omitempty"`
	Steps    []Step        `json:"steps"`
}

// System is one participating system and the capabilities it owns.
type System struct {
	Description  string   `json:"description,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// StepDefaults are the workflow-wide timeout and retry policy.
type StepDefaults struct {
	Timeout string     `json:"timeout,omitempty"`
	Retry   *RetrySpec `json:"retry,omitempty"`
}

// Step is one unit of work in the DAG.
type Step struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Capability is what the step asks for, such as "payments.charge".
	// When empty it is "<owner>.<name>".
	Capability string `json:"capability,omitempty"`
	// Owner pins the step to one system in Systems.
	Owner string `json:"owner,omitempty"`
	// Transport is how the step runs: TransportSidecar (the default; an app
	// behind a Tasker agent offers Capability) or TransportBus (a request
	// published on the service bus to Subject, completed by the reply of
	// whatever consumes it, for systems that run no sidecar).
	Transport string `json:"transport,omitempty"`
	// Subject is the bus subject a TransportBus step's requests go to,
	// such as "billing.invoice.create"; only for that transport.
	Subject   string   `json:"subject,omitempty"`
	DependsOn []string `json:"depends_on,omitempty"`
	// Input maps the task input and upstream results to the step's input:
	// a string beginning with "$." is an expression ($.input.amount,
	// $.steps.reserve.result.id), "$$" escapes a literal "$", anything else
	// is a literal. Objects and arrays nest.
	Input map[string]any `json:"input,omitempty"`
	// Timeout bounds one attempt, as a Go duration ("30s", "5m").
	Timeout string     `json:"timeout,omitempty"`
	Retry   *RetrySpec `json:"retry,omitempty"`
	// ResultSchema is the success contract: the JSON Schema a result must
	// satisfy before the step can complete.
	ResultSchema any `json:"result_schema,omitempty"`
	// ErrorSchema is the failure contract: the JSON Schema of the error an
	// app may report (code, message, retry_after, details).
	ErrorSchema any `json:"error_schema,omitempty"`
}

// RetrySpec is a retry policy as written; omitted fields inherit.
type RetrySpec struct {
	MaxAttempts *int         `json:"max_attempts,omitempty"`
	Backoff     *BackoffSpec `json:"backoff,omitempty"`
	// Retryable lists the error codes worth another attempt. When empty,
	// the app's retryable flag on each failure decides.
	Retryable []string `json:"retryable,omitempty"`
}

// BackoffSpec is an exponential backoff as written.
type BackoffSpec struct {
	Initial    string   `json:"initial,omitempty"`
	Max        string   `json:"max,omitempty"`
	Multiplier *float64 `json:"multiplier,omitempty"`
	Jitter     *float64 `json:"jitter,omitempty"`
}

// Limits bound what a manifest may ask for, so that one manifest cannot
// exhaust a server. The zero value means DefaultLimits.
type Limits struct {
	MaxManifestBytes int // size of the source document
	MaxSteps         int // steps in one workflow
	MaxDepth         int // levels in the DAG (longest chain of steps)
	MaxNesting       int // nesting of objects and arrays in the document
	MaxNodes         int // values in the document, aliases expanded
	MaxAttempts      int // retry.max_attempts
}

// DefaultLimits are the limits a server applies unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxManifestBytes: 4 << 20,
		MaxSteps:         10000,
		MaxDepth:         1000,
		MaxNesting:       64,
		MaxNodes:         1 << 20,
		MaxAttempts:      100,
	}
}

func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = d.MaxManifestBytes
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = d.MaxSteps
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxNesting <= 0 {
		l.MaxNesting = d.MaxNesting
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = d.MaxNodes
	}
	if l.MaxAttempts <= 0 || l.MaxAttempts > 255 {
		l.MaxAttempts = d.MaxAttempts
	}
	// Step state counts unmet parents in 16 bits.
	if l.MaxSteps > 65535 {
		l.MaxSteps = 65535
	}
	return l
}

// Parse decodes a YAML or JSON manifest and checks its structure against
// ManifestSchema: unknown fields, wrong types and missing required fields are
// all reported at once, each with its path and line. Semantic checks (the
// DAG, mappings, contracts) happen in Compile; Load does both.
func Parse(src []byte, lim Limits) (*Manifest, error) {
	m, _, err := parse(src, lim.orDefault())
	return m, err
}

func parse(src []byte, lim Limits) (*Manifest, *document, error) {
	if len(src) > lim.MaxManifestBytes {
		return nil, nil, &ValidationError{Problems: []Problem{{
			Message: fmt.Sprintf("manifest is %d bytes, over the limit of %d; split the workflow or raise the limit", len(src), lim.MaxManifestBytes),
		}}}
	}
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, nil, &ValidationError{Problems: []Problem{{Message: errEmpty.Error()}}}
	}
	doc, err := parseDocument(src, lim)
	if err != nil {
		p := Problem{Message: err.Error()}
		var de *docError
		if errors.As(err, &de) {
			p = Problem{Path: de.path, Line: de.line, Message: de.err.Error()}
		}
		return nil, nil, &ValidationError{Problems: []Problem{p}}
	}
	ps := &problems{lines: doc.lines}
	checkStructure(doc, ps)
	checkIntegers(doc, ps, lim)
	m, err := decodeManifest(doc.root)
	if err != nil && len(ps.list) == 0 {
		// The structural schema admits only what decodes; reaching here is
		// a bug in ManifestSchema, not in the user's manifest.
		return nil, doc, fmt.Errorf("decode manifest: %w", err)
	}
	return m, doc, ps.err()
}

// checkIntegers makes the integer fields decodable into Go ints. JSON Schema
// calls 3.0 and 1e2 integers, and accepts integers of any size; Go's decoder
// takes neither. Integral values are rewritten in plain digits, and values
// out of range are reported here and dropped, so that decoding goes on.
func checkIntegers(doc *document, ps *problems, lim Limits) {
	root, _ := doc.root.(map[string]any)
	fix := func(path string, retry any) {
		r, _ := retry.(map[string]any)
		n, ok := r["max_attempts"].(json.Number)
		if !ok {
			return
		}
		if _, err := strconv.Atoi(string(n)); err == nil {
			return
		}
		if f, err := strconv.ParseFloat(string(n), 64); err == nil && f == math.Trunc(f) {
			if math.Abs(f) <= math.MaxInt32 {
				r["max_attempts"] = json.Number(strconv.Itoa(int(f)))
				return
			}
			ps.add(joinPath(path, "max_attempts"), "%s is out of range: use 1 (no retries) to %d", n, lim.MaxAttempts)
		}
		// Not a whole number at all: the structural check has said so.
		delete(r, "max_attempts")
	}
	if d, ok := root["defaults"].(map[string]any); ok {
		fix("defaults.retry", d["retry"])
	}
	steps, _ := root["steps"].([]any)
	for i, s := range steps {
		if st, ok := s.(map[string]any); ok {
			fix(joinPath(indexPath("steps", i), "retry"), st["retry"])
		}
	}
}

// decodeManifest decodes the document into a Manifest. With structural
// problems it still fills every field it can, so that Load can go on to
// find the semantic problems too.
func decodeManifest(root any) (*Manifest, error) {
	raw, err := json.Marshal(root)
	if err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	err = dec.Decode(&m)
	return &m, err
}

// Load parses and compiles a manifest: the one call an API handler or the
// CLI needs. Every problem found, structural or semantic, is in the returned
// *ValidationError.
func Load(src []byte, lim Limits) (*Plan, error) {
	lim = lim.orDefault()
	m, doc, err := parse(src, lim)
	var structural *ValidationError
	if err != nil && (doc == nil || !errors.As(err, &structural)) {
		return nil, err
	}
	if structural == nil {
		return compile(m, doc.lines, lim)
	}
	if m == nil {
		return nil, structural
	}
	// Report the semantic problems as well, except on fields whose
	// structure is already wrong: one problem per field is enough.
	_, serr := compile(m, doc.lines, lim)
	var semantic *ValidationError
	if errors.As(serr, &semantic) {
		ps := &problems{lines: doc.lines, list: structural.Problems}
		for _, p := range semantic.Problems {
			if !coveredBy(p.Path, structural.Problems) {
				ps.list = append(ps.list, p)
			}
		}
		return nil, ps.err()
	}
	return nil, structural
}

// coveredBy reports whether path or one of its ancestors already has a problem.
func coveredBy(path string, list []Problem) bool {
	for _, p := range list {
		if p.Path == path || p.Path == "" || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}
