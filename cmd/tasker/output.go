package main

// Printing and reading helpers shared by the operator commands.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskerv1 "github.com/tasker-run/tasker/proto/tasker/v1"
)

// stdin is what `-f -` and `@-` read; tests replace it.
var stdin io.Reader = os.Stdin

// now is the clock that running steps' durations are measured with;
// tests replace it.
var now = time.Now

// jsonOptions print responses with the .proto field names (snake_case)
// and every field, set or not, so that scripts find the same keys every
// time. Enums are their full names ("TASK_STATE_COMPLETE"), 64-bit
// integers strings, as protojson does.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// writeProto prints m as JSON: indented, or on one line for streams (one
// object per line). protojson varies its spacing on purpose, so the text
// is re-indented to stay the same from build to build.
func (c *conn) writeProto(m proto.Message, oneLine bool) int {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		fmt.Fprintf(c.stderr, "tasker %s: write JSON: %v\n", c.cmd.name, err)
		return exitFail
	}
	var b bytes.Buffer
	if oneLine {
		err = json.Compact(&b, raw)
	} else {
		err = json.Indent(&b, raw, "", "  ")
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "tasker %s: write JSON: %v\n", c.cmd.name, err)
		return exitFail
	}
	b.WriteByte('\n')
	if _, err := c.stdout.Write(b.Bytes()); err != nil {
		fmt.Fprintf(c.stderr, "tasker %s: %v\n", c.cmd.name, err)
		return exitFail
	}
	return exitOK
}

// table aligns tab-separated columns; Flush prints them.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0) }

// row writes one tab-separated row.
func row(w io.Writer, cells ...string) { fmt.Fprintln(w, strings.Join(cells, "\t")) }

// timestamp renders a time in UTC, to the second; "-" when unset.
func timestamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// clock renders the time of day in UTC, to the millisecond, for events.
func clock(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("15:04:05.000")
}

// elapsed renders a duration for people: milliseconds under a second,
// hundredths under a minute, whole seconds above.
func elapsed(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		d = d.Round(time.Millisecond)
	case d < time.Minute:
		d = d.Round(10 * time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	return duration(d)
}

// taskState is a state's name as the docs write it: "in_progress".
func taskState(s taskerv1.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

func stepState(s taskerv1.StepState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_STATE_"))
}

// parseTaskState reads "in_progress" (or "TASK_STATE_IN_PROGRESS").
func parseTaskState(s string) (taskerv1.TaskState, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "TASK_STATE_") {
		name = "TASK_STATE_" + name
	}
	if v, ok := taskerv1.TaskState_value[name]; ok && v != 0 {
		return taskerv1.TaskState(v), nil
	}
	var names []string
	for v := range len(taskerv1.TaskState_name) {
		if v != 0 {
			names = append(names, taskState(taskerv1.TaskState(v)))
		}
	}
	return 0, fmt.Errorf("unknown task state %q; want one of %s", s, strings.Join(names, ", "))
}

// workflowName is "namespace/name".
func workflowName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// splitWorkflow reads a workflow argument, which may name its namespace
// ("shop/order-fulfilment") instead of, or as well as, --namespace.
func splitWorkflow(arg, namespace string) (string, string, error) {
	ns, name, ok := strings.Cut(arg, "/")
	if !ok {
		return namespace, arg, nil
	}
	if namespace != "" && namespace != ns {
		return "", "", fmt.Errorf("workflow %q is in namespace %q, but --namespace says %q", arg, ns, namespace)
	}
	return ns, name, nil
}

// readSource reads a file, or standard input for "-". Its error names
// the file.
func readSource(file string) ([]byte, error) {
	if file == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", file, readError(err))
	}
	return b, nil
}

// usageErr is a JSON argument that is wrong on the command line itself.
type usageErr string

func (e usageErr) Error() string { return string(e) }

// jsonArg reads a flag's JSON value: inline text, @FILE, or @- for
// standard input. Inline text that is not JSON is a usage error
// (usageErr); a file that cannot be read or holds no JSON is not.
func jsonArg(flagName, value string) (string, error) {
	raw, source := []byte(value), ""
	if file, ok := strings.CutPrefix(value, "@"); ok {
		b, err := readSource(file)
		if err != nil {
			return "", err
		}
		raw, source = b, file
		if file == "-" {
			source = "standard input"
		}
	}
	raw = bytes.TrimSpace(raw)
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		if source == "" {
			return "", usageErr(fmt.Sprintf("-%s is not JSON: %v", flagName, err))
		}
		return "", fmt.Errorf("-%s %s: not JSON: %v", flagName, source, err)
	}
	return string(raw), nil
}

// stepsDone counts a task's steps that are complete or resolved by hand.
func stepsDone(t *taskerv1.Task) int {
	n := 0
	for _, s := range t.GetSteps() {
		if s.State == taskerv1.StepState_STEP_STATE_COMPLETE || s.State == taskerv1.StepState_STEP_STATE_RESOLVED_MANUALLY {
			n++
		}
	}
	return n
}

// dash stands in for an empty cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
