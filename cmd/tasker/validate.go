package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

const validateUsage = `
Usage: tasker validate [-o text|json] FILE...

Checks workflow manifests (YAML or JSON) the way a server does before it
accepts one: structure, names, the DAG (cycles, unknown steps), durations
and retry policies, JSON Schema contracts, and every input mapping against
the contracts it reads. Every file is checked, and every problem in it is
printed as

    FILE: PATH (line N): MESSAGE

For a valid manifest it prints the workflow's shape: steps, edges, levels,
how many steps can run at once, and the critical path with its worst case
(the sum of its steps' timeouts, without retries).

Exit status: 0 when every file is valid, 1 when one is not or cannot be
read, 2 on a usage error.
`

func validateCommand() command {
	return command{name: "validate", synopsis: "check workflow manifests and summarise their shape", usage: validateUsage, run: runValidate}
}

// validation is the outcome for one file; it is also the JSON output.
type validation struct {
	File     string             `json:"file"`
	Valid    bool               `json:"valid"`
	Summary  *summary           `json:"summary,omitempty"`
	Problems []workflow.Problem `json:"problems,omitempty"`
	// Error is set when the file could not be read or checked at all.
	Error string `json:"error,omitempty"`
}

// summary is a valid workflow's identity and shape.
type summary struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	workflow.Summary
	// WorstCaseText is WorstCase for people ("2m5s").
	WorstCaseText string `json:"worst_case"`
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	c := validateCommand()
	fset := flags(c, stderr)
	format := formatFlag(fset)
	files, code, ok := parse(c, fset, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(files) == 0 {
		return usageError(stderr, c, "no manifest given")
	}
	results := make([]validation, len(files))
	exit := exitOK
	for i, f := range files {
		results[i] = validateFile(f)
		if !results[i].Valid {
			exit = exitFail
		}
	}
	if *format == formatJSON {
		if code := writeJSON(stdout, stderr, results); code != exitOK {
			return code
		}
		return exit
	}
	invalid, printed := 0, false
	// block separates what is printed for each file by a blank line.
	block := func() {
		if printed {
			fmt.Fprintln(stdout)
		}
		printed = true
	}
	for _, r := range results {
		switch {
		case r.Error != "":
			invalid++
			fmt.Fprintf(stderr, "%s: %s\n", r.File, r.Error)
		case !r.Valid:
			invalid++
			block()
			for _, p := range r.Problems {
				fmt.Fprintf(stdout, "%s: %s\n", r.File, p)
			}
			fmt.Fprintf(stdout, "%s: invalid, %s\n", r.File, plural(len(r.Problems), "problem"))
		default:
			block()
			writeSummary(stdout, r.File, r.Summary)
		}
	}
	if len(results) > 1 {
		block()
		fmt.Fprintf(stdout, "%s checked: %d valid, %d invalid\n", plural(len(results), "file"), len(results)-invalid, invalid)
	}
	return exit
}

// validateFile reads and checks one manifest.
func validateFile(file string) validation {
	v := validation{File: file}
	src, err := os.ReadFile(file)
	if err != nil {
		v.Error = readError(err)
		return v
	}
	plan, err := workflow.Load(src, workflow.Limits{})
	var ve *workflow.ValidationError
	switch {
	case errors.As(err, &ve):
		v.Problems = ve.Problems
		return v
	case err != nil:
		v.Error = err.Error()
		return v
	}
	s := plan.Summarize()
	v.Valid = true
	v.Summary = &summary{Name: plan.Name, Namespace: plan.Namespace, Version: plan.Version, Summary: s, WorstCaseText: duration(s.WorstCase)}
	return v
}

func writeSummary(w io.Writer, file string, s *summary) {
	fmt.Fprintf(w, "%s: valid\n", file)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-16s %s\n", label, fmt.Sprintf(format, args...))
	}
	row("name", "%s", s.Name)
	row("namespace", "%s", s.Namespace)
	row("version", "%s", s.Version)
	row("steps", "%d", s.Steps)
	row("edges", "%d", s.Edges)
	row("levels", "%d", s.Levels)
	row("max parallelism", "%d", s.MaxParallelism)
	row("critical path", "%s (worst case %s)", strings.Join(s.CriticalPath, " → "), s.WorstCaseText)
	row("roots", "%s", strings.Join(s.Roots, ", "))
	row("leaves", "%s", strings.Join(s.Leaves, ", "))
}

// readError says why a file could not be read, without repeating its name.
func readError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "cannot read: " + pe.Err.Error()
	}
	return "cannot read: " + err.Error()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// duration renders a duration without zero units: 1m rather than 1m0s.
func duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
